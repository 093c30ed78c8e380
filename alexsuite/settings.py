"""Settings dataclasses, the one home of every default: each field holds its default, its help
text and its source (a paper section or released-code file, see docs/references.md) in
`field(metadata=...)`. The command line builds its options from these fields
(cli/options.py), and saved configurations come back through `from_dict`, which refuses keys
it does not know instead of ignoring them (as Fast R-CNN's `_merge_a_into_b` and ultralytics'
`check_cfg` do)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import MISSING, Field

from .errors import ConfigError


def setting(default=MISSING, help: str = "", source: str = "", *, factory=None) -> Field:
    """A dataclass field with its help text and source; `factory` for mutable defaults."""
    metadata = {"help": help, "source": source}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_of(cls, name: str) -> Field:
    try:
        return next(f for f in dataclasses.fields(cls) if f.name == name)
    except StopIteration:
        raise KeyError(f"{cls.__name__} has no setting {name!r}") from None


def default_of(cls, name: str):
    """The field's default (None for a required field, one without a default)."""
    f = field_of(cls, name)
    if f.default is not MISSING:
        return f.default
    return None if f.default_factory is MISSING else f.default_factory()


def help_of(cls, name: str) -> str:
    """The field's help text, its source appended in brackets: what --help shows."""
    meta = field_of(cls, name).metadata
    text, source = meta.get("help", ""), meta.get("source", "")
    return f"{text} [source: {source}]" if source else text


def from_dict(cls, data: dict, where: str):
    """`cls` from a saved dict (e.g. config.json): unknown keys are an error naming them, and
    fields that are settings dataclasses themselves are read the same way."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object of {cls.__name__} settings, found {type(data).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ConfigError(
            f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(names)}); "
            "it was written by another alexsuite version or edited: remove them"
        )
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        kind = hints.get(name)
        if dataclasses.is_dataclass(kind) and isinstance(value, dict):
            value = from_dict(kind, value, f"{where}: {name}")
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None

"""Settings dataclasses, the one home of every default: each field holds its default, its help
text and its source (a paper section or released-code file, see docs/references.md) in
`field(metadata=...)`. The command line builds its options from these fields
(cli/options.py), and saved configurations come back through `from_dict`, which refuses keys
it does not know instead of ignoring them (as Fast R-CNN's `_merge_a_into_b` and ultralytics'
`check_cfg` do)."""

from __future__ import annotations

import dataclasses
import math
import types
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


def require(ok: bool, message: str) -> None:
    """A settings check: `message` (naming the option and the fix) when not `ok`."""
    if not ok:
        raise ConfigError(message)


def finite(value, low: float = -math.inf, high: float = math.inf) -> bool:
    """A real number (bools are not), not nan or infinite, within [low, high]."""
    try:
        return not isinstance(value, bool) and math.isfinite(value) and low <= value <= high
    except (TypeError, OverflowError):
        return False


def _type_ok(value, hint) -> bool:
    """Whether `value` fits a simple hint (int, float, str, bool, or one of them or None);
    richer hints (tuples, unions with them) are left to the settings' own checks."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    args = typing.get_args(hint) if union else (hint,)
    if not all(a in (int, float, str, bool, type(None)) for a in args):
        return True
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {
        type(None): value is None,
        bool: isinstance(value, bool),
        str: isinstance(value, str),
        int: number and isinstance(value, int),
        float: number,
    }
    return any(fits[a] for a in args)


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
        elif not _type_ok(value, kind):
            raise ConfigError(f"{where}: {name} is {value!r}, not of its kind ({kind})")
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)  # JSON has no tuples: a saved (600,) comes back as [600]
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from None

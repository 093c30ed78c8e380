"""What the API classes share: settings taken as a dataclass plus keyword overrides, and the
choice between raising on an unreadable image (a script's default) and skipping it (the CLI's)."""

from __future__ import annotations

from dataclasses import fields, replace

from ..errors import ConfigError


def settings_with(cls, settings, overrides: dict):
    """`settings` (default: cls()) with `overrides` applied; an unknown name is refused."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no setting {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return replace(settings if settings is not None else cls(), **overrides)


def raise_first(errors) -> None:
    """Raise the first unreadable image's own error (an ImageDecodeError naming the file)."""
    for err in errors:
        if err is not None:
            raise err

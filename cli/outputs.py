"""Where commands write pictures: folders made on demand, and a one-line error when they cannot be."""

from __future__ import annotations

from pathlib import Path

import click

from alexsuite.errors import ConfigError
from alexsuite.fileio import display_path


def output_folder(folder, option: str) -> Path:
    """`folder`, made (with its parents) if it is not there yet."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"{option} {display_path(folder)}: cannot make this folder ({e.strerror}); give another"
        ) from None
    return folder


def warn(message: str) -> None:
    """A warning on stderr (stdout stays for results and --json)."""
    click.secho(f"warning: {message}", fg="yellow", err=True)

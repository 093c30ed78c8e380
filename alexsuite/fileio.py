"""Files written so that a crash never leaves half of one, and content hashes for files that
may be large: shared by checkpoints, index directories and the proposal cache."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: Path, write) -> None:
    """Write via a temp file in the same folder + fsync + rename: a crash leaves the old file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path`, or would hold it once created."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(path: Path, need: int, what: str, fix: str) -> None:
    """Refuse to start writing `need` bytes under `path` when the disk cannot take them:
    a stage that stops at a clear line beats one that dies half-way with ENOSPC."""
    from .errors import DiskSpaceError

    free = free_bytes(path)
    if need > free:
        raise DiskSpaceError(f"{path}: {what} need about {_gb(need)} and {_gb(free)} are free; {fix}")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"

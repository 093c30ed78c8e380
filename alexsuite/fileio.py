"""Files written so that a crash never leaves half of one, and content hashes for files that
may be large: shared by checkpoints, index directories and the proposal cache."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import stat
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


class NotARegularFile(OSError):
    """A FIFO, socket, device or directory where a file was expected: opening a FIFO to read
    would wait forever for a writer, so such paths are refused before anything reads them."""


def open_regular(path) -> io.BufferedReader:
    """Open `path` for reading only if it is a regular file (after links). The open never
    blocks (O_NONBLOCK), and the check is made on the opened file, not a second lookup."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotARegularFile(errno.EINVAL, f"not a regular file ({file_kind(mode)})", display_path(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_kind(mode: int) -> str:
    """What a stat mode says a path is, in words."""
    kinds = (
        (stat.S_ISREG, "a file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(mode)), "not a file")


def display_path(path) -> str:
    """A path as text that can always be printed: bytes of a name that are not UTF-8 (kept by
    Python as surrogates) show as U+FFFD instead of raising or printing a repr."""
    return os.fsencode(str(path)).decode("utf-8", "replace")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a regular file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open_regular(path) as f:
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


def output_names(paths, suffix: str = ".png") -> dict[str, str]:
    """A file name for each input's picture in one output folder: its own stem, unless inputs
    share a stem (a/x.jpg, b/x.jpg), then the folders that tell them apart joined by "__"
    (a__x.png, b__x.png), and the input's own suffix too if that is still not enough
    (x.jpg.png, x.png.png): no picture overwrites another's."""
    absolute = {str(p): Path(os.path.abspath(p)) for p in paths}
    by_stem: dict[str, list[Path]] = {}
    for a in dict.fromkeys(absolute.values()):
        by_stem.setdefault(a.stem, []).append(a)
    names = {}
    for given, a in absolute.items():
        same = by_stem[a.stem]
        if len(same) == 1:
            names[given] = a.stem + suffix
            continue
        common = Path(os.path.commonpath([str(q.parent) for q in same]))
        stems = ["__".join(q.relative_to(common).with_suffix("").parts) for q in same]
        name = stems[same.index(a)]
        names[given] = (name + a.suffix if stems.count(name) > 1 else name) + suffix
    return names

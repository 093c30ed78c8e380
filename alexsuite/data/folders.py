"""Walking a folder for the image files in it: the one walk `index` and `search` share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .decode import is_image_path


@dataclass
class Scan:
    images: list[Path]
    others: int = 0  # files that are not images
    unreadable: list[str] = field(default_factory=list)  # folders os.walk could not list, odd names


def scan_images(root: Path) -> Scan:
    """Image files under `root` (recursive, sorted, hidden entries skipped)."""
    scan = Scan([])
    for dirpath, dirnames, filenames in os.walk(
        root, followlinks=True, onerror=lambda e: scan.unreadable.append(f"{e.filename}: {e.strerror}")
    ):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            try:
                str(p).encode("utf-8")  # SQLite stores text: a name that is not UTF-8 cannot be a row
            except UnicodeEncodeError:
                scan.unreadable.append(f"{p!r}: file name is not valid UTF-8")
                continue
            if is_image_path(p):
                scan.images.append(p)
            else:
                scan.others += 1
    return scan

"""Walking a folder for the image files in it: the one walk `index`, `search`, `detect`,
`classify`-style folder inputs and class-folder datasets share. Only regular files are ever
taken (a named pipe would block its reader forever), links are followed but every folder is
walked once (a link back to a parent is reported, not followed round), and a file reached
twice through links is taken once."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import display_path, file_kind
from .decode import is_image_path


@dataclass
class Scan:
    images: list[Path] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # regular files that are not images (by extension)
    special: list[str] = field(default_factory=list)  # FIFOs, sockets, devices: never opened
    loops: list[str] = field(default_factory=list)  # links to a folder already walked: not walked again
    duplicates: list[str] = field(default_factory=list)  # image files reached again through a link
    unreadable: list[str] = field(default_factory=list)  # folders not listed, dangling links, odd names

    def problems(self) -> list[str]:
        """One line per kind of entry that was left out, for a warning."""
        kinds = (
            (self.special, "special file(s) (pipes, sockets, devices) never opened"),
            (self.loops, "link(s) back to a folder already walked, not followed again"),
            (self.duplicates, "image(s) reached a second time through a link, taken once"),
            (self.unreadable, "unreadable folder(s), dangling link(s) or file name(s)"),
        )
        return [f"skipped {len(found)} {what}, e.g. {found[0]}" for found, what in kinds if found]


def scan_images(root: Path) -> Scan:
    """Image files under `root`, recursive, in os.walk's top-down order (a folder's files by
    name, then its subfolders by name); hidden entries are skipped."""
    scan = Scan()
    root = Path(root)
    try:
        top = root.stat()
    except OSError as e:
        scan.unreadable.append(f"{display_path(root)}: {e.strerror}")
        return scan
    folders, files, stack = {(top.st_dev, top.st_ino)}, set(), [root]
    while stack:  # depth first with a stack of its own: any depth of folders, no recursion limit
        stack += reversed(_walk(stack.pop(), scan, folders, files))
    return scan


def listed_images(paths) -> Scan:
    """The image files of a list (`index --files-from`), each as an absolute path whose folder
    is resolved (as a walked root is), with the same checks and counts as a walk; a folder in
    the list is reported, not walked."""
    scan, files = Scan(), set()
    for given in paths:
        path = Path(given).expanduser()
        path = Path(os.path.realpath(path.parent)) / path.name
        if path.is_dir():
            scan.unreadable.append(f"{display_path(given)}: a folder in a list of files (give folders as IMAGES)")
        else:
            _take(path, path.name, scan, set(), files)
    return scan


def _walk(folder: Path, scan: Scan, folders: set, files: set) -> list[Path]:
    """Take one folder's files into `scan`; return its subfolders, by name, to walk next."""
    try:
        with os.scandir(folder) as it:
            entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        scan.unreadable.append(f"{display_path(folder)}: {e.strerror}")
        return []
    subfolders = []
    for entry in entries:
        folder_found = _take(Path(entry.path), entry.name, scan, folders, files)
        if folder_found:
            subfolders.append(folder_found)
    return subfolders


def _take(path: Path, name: str, scan: Scan, folders: set, files: set) -> Path | None:
    """File `path` into `scan` by what it is; a folder not walked yet is returned, to walk."""
    try:
        name.encode("utf-8")  # SQLite stores text: a name that is not UTF-8 cannot be a row
    except UnicodeEncodeError:
        scan.unreadable.append(f"{display_path(path)}: file name is not valid UTF-8")
        return None
    try:
        st = path.stat()  # follows links
    except OSError as e:
        why = "dangling link" if path.is_symlink() else (e.strerror or str(e))
        scan.unreadable.append(f"{display_path(path)}: {why}")
        return None
    key = (st.st_dev, st.st_ino)
    if stat.S_ISDIR(st.st_mode):
        if key in folders:
            scan.loops.append(display_path(path))
            return None
        folders.add(key)
        return path
    if not stat.S_ISREG(st.st_mode):
        scan.special.append(f"{display_path(path)} ({file_kind(st.st_mode)})")
    elif not is_image_path(path):
        scan.others.append(display_path(path))
    elif key in files:
        scan.duplicates.append(display_path(path))
    else:
        files.add(key)
        scan.images.append(path)
    return None

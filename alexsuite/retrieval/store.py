"""An index directory on disk: index.faiss + meta.sqlite + manifest.json (+ .lock).

- manifest.json says how the vectors were made (model fingerprint, layer, preprocessing) and
  how they are indexed (IndexSpec); it is written once, atomically, when the index is created.
- meta.sqlite has one row per indexed image: id (the FAISS id), path, size, mtime, content
  hash, class label. SQLite is the source of truth: a vector whose id has no row is invisible.
- index.faiss is replaced atomically (temp file, fsync, rename) and always *before* SQLite
  commits, so a crash at any moment leaves at worst vectors without rows, which searches skip
  and the next writer removes. The previous index stays usable; the next run resumes.
- One writer at a time holds an exclusive lock on .lock; readers never lock (SQLite WAL).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from ..errors import AlexsuiteError, CheckpointError, DataError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..version import __version__
from . import index as faiss_index

FORMAT = "alexsuite-index/1"
INDEX_FILE, META_FILE, MANIFEST_FILE, LOCK_FILE = "index.faiss", "meta.sqlite", "manifest.json", ".lock"
DEFAULT_ROOT = Path("indexes")
DEFAULT_INDEX = "default"  # the name an index gets when none is given: indexes/default

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id       INTEGER PRIMARY KEY,   -- the vector's id in index.faiss
    path     TEXT NOT NULL UNIQUE,  -- absolute path
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256   TEXT NOT NULL,
    label    TEXT,                  -- the top folder under the indexed root, if any
    added    REAL NOT NULL          -- unix time
);
CREATE INDEX IF NOT EXISTS images_sha256 ON images (sha256);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class IndexBusyError(AlexsuiteError):
    """Another process is writing to this index."""


def resolve_dir(name_or_path: str | os.PathLike) -> Path:
    """A bare name (no slash) means indexes/NAME; anything else is a path."""
    text = str(name_or_path)
    if os.sep not in text and not text.startswith("."):
        return DEFAULT_ROOT / text
    return Path(text).expanduser()


@dataclass
class Row:
    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    label: str | None


class IndexStore:
    """An opened index directory. Use `create`, `open_read` or the `writing` context manager."""

    def __init__(self, root: Path, manifest: dict, db: sqlite3.Connection, index: faiss.Index | None):
        self.root = root
        self.manifest = manifest
        self.db = db
        self.index = index
        self.spec = faiss_index.IndexSpec.from_dict(manifest["spec"], f"{root / MANIFEST_FILE}: spec")

    # ---- opening -------------------------------------------------------------------------
    @staticmethod
    def exists(root: Path) -> bool:
        return (root / MANIFEST_FILE).is_file()

    @classmethod
    def create(cls, root: Path, model: dict, layer: str, preprocess: dict, spec: faiss_index.IndexSpec) -> IndexStore:
        """Write the manifest of a new, empty index (caller holds the lock)."""
        root.mkdir(parents=True, exist_ok=True)
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "alexsuite": __version__,
            "faiss": faiss.__version__,
            "model": model,
            "layer": layer,
            "preprocess": preprocess,
            "spec": spec.to_dict(),
        }
        atomic_write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        return cls(root, manifest, _connect(root), None)

    @classmethod
    def open_read(cls, root: Path) -> IndexStore:
        """Open for searching; errors name the directory and the fix."""
        if not root.exists():
            raise DataError(f"{root}: no such index; build it with `alexsuite index IMAGES --index {root}`")
        manifest = _read_manifest(root)
        store = cls(root, manifest, _connect(root), None)
        store.index = store._read_index()
        return store

    def _read_index(self) -> faiss.Index | None:
        path = self.root / INDEX_FILE
        if not path.exists():
            return None  # created, nothing committed yet
        try:
            return faiss.read_index(str(path))
        except RuntimeError:
            raise DataError(
                f"{path}: corrupt FAISS index file; rebuild with `alexsuite index IMAGES --index {self.root} --rebuild`"
            ) from None

    def close(self) -> None:
        self.db.close()

    # ---- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def rows_by_id(self, ids) -> dict[int, Row]:
        ids = [int(i) for i in ids if i >= 0]
        out = {}
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[start : start + 900]
            q = f"SELECT * FROM images WHERE id IN ({','.join('?' * len(chunk))})"
            out.update({r[0]: Row(*r[:6]) for r in self.db.execute(q, chunk)})
        return out

    def row_by_path(self, path: Path) -> Row | None:
        r = self.db.execute("SELECT * FROM images WHERE path = ?", (str(path),)).fetchone()
        return Row(*r[:6]) if r else None

    def rows_under(self, folder: Path) -> dict[str, Row]:
        prefix = str(folder).rstrip(os.sep) + os.sep
        q = "SELECT * FROM images WHERE substr(path, 1, ?) = ?"
        return {r[1]: Row(*r[:6]) for r in self.db.execute(q, (len(prefix), prefix))}

    def next_id(self) -> int:
        """Ids are never reused, even after the newest image is removed: a search that loaded
        an older index.faiss must never see an old vector under a new file's name."""
        counter = self.db.execute("SELECT value FROM counters WHERE name = 'next_id'").fetchone()
        top = self.db.execute("SELECT MAX(id) FROM images").fetchone()[0]
        held = faiss_index.stored_ids(self.index) if self.index is not None else np.empty(0)
        return max(
            counter[0] if counter else 0, (top if top is not None else -1) + 1, int(held.max()) + 1 if len(held) else 0
        )

    def set_next_id(self, value: int) -> None:
        """Inside the writer's transaction."""
        self.db.execute("INSERT OR REPLACE INTO counters VALUES ('next_id', ?)", (value,))

    def dead_vectors(self) -> int:
        """Vectors in the index without a row (removed but not removable, or a writer died)."""
        return max(0, (self.index.ntotal if self.index is not None else 0) - self.count())

    # ---- writing (caller holds the lock) ------------------------------------------------------
    def save_index(self) -> None:
        atomic_write_bytes(
            self.root / INDEX_FILE, lambda f: faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))
        )

    def drop_orphans(self) -> int:
        """Remove vectors whose rows never committed (a writer was killed between the two)."""
        if self.index is None or not self.index.ntotal:
            return 0
        held = faiss_index.stored_ids(self.index)
        known = {r[0] for r in self.db.execute("SELECT id FROM images")}
        orphans = [int(i) for i in held if int(i) not in known]
        if orphans and faiss_index.remove(self.index, orphans):
            return len(orphans)
        return 0


def _connect(root: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(root / META_FILE, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")  # readers go on while a writer commits
        db.executescript(SCHEMA)
    except sqlite3.DatabaseError as e:
        raise DataError(
            f"{root / META_FILE}: unreadable metadata database ({e}); rebuild the index "
            f"with `alexsuite index IMAGES --index {root} --rebuild`"
        ) from None
    return db


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise DataError(
            f"{root}: not an alexsuite index (no {MANIFEST_FILE}); "
            f"build one with `alexsuite index IMAGES --index {root}`"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable manifest ({e}); rebuild with --rebuild") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: index format {manifest.get('format')!r}, this alexsuite reads {FORMAT}")
    return manifest


@contextmanager
def writer_lock(root: Path, wait: float = 0.0):
    """Exclusive lock on the index directory; waits up to `wait` seconds, then refuses."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    raise IndexBusyError(
                        f"{root}: another process (pid {holder}) is writing this index; "
                        "wait for it, or pass --wait SECONDS"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def model_record(loaded) -> dict:
    """What an index remembers about the model: fingerprint plus the file's stat, so later
    checks against the same unchanged file need not re-hash the weights."""
    st = loaded.source.stat()
    return {
        "source": str(loaded.source.resolve()),
        "arch": loaded.arch,
        "fingerprint": loaded.fingerprint,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def check_model(manifest: dict, loaded) -> None:
    """Refuse vectors from any model but the one that built the index."""
    rec = manifest["model"]
    try:
        st = loaded.source.stat()
        same_file = (
            str(loaded.source.resolve()) == rec["source"]
            and st.st_size == rec["size"]
            and st.st_mtime_ns == rec["mtime_ns"]
        )
    except OSError:
        same_file = False
    if same_file or loaded.fingerprint == rec["fingerprint"]:
        return
    raise CheckpointError(
        f"this index was built with {rec['source']} ({rec['arch']}, fingerprint {rec['fingerprint']}, "
        f"layer {manifest['layer']}), not {loaded.source} ({loaded.arch}, fingerprint {loaded.fingerprint}); "
        "use that model, or build a separate index (--index NAME) for this one"
    )

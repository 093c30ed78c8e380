"""An index directory on disk: index.faiss + meta.sqlite + manifest.json (+ .lock; + raw.faiss
for an index with database-side augmentation).

- manifest.json says how the vectors were made (model fingerprint, layer, preprocessing) and
  how they are indexed (IndexSpec); it is written once, atomically, when the index is created.
- meta.sqlite has one row per indexed image: id (the FAISS id), path, size, mtime, content
  hash, class label. SQLite is the source of truth: a vector whose id has no row is invisible.
- index.faiss is replaced atomically (temp file, fsync, rename) and always *before* SQLite
  commits, so a crash at any moment leaves at worst vectors without rows, which searches skip
  and the next writer removes. The previous index stays usable; the next run resumes.
- One writer at a time holds an exclusive lock on .lock; readers never lock (SQLite WAL).
- With --dba, index.faiss holds the augmented vectors; raw.faiss keeps the embedded ones (exact,
  an id-mapped flat index) and the `dba` table each one's n-th neighbour distance, so an update
  recomputes only the neighbourhoods it changes. Only writers read them (rerank.Augmented).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import shutil
import sqlite3
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import faiss
import numpy as np

from ..errors import AlexsuiteError, CheckpointError, ConfigError, DataError, DiskSpaceError
from ..fileio import atomic_write_bytes, atomic_write_text, display_path
from ..version import __version__
from . import index as faiss_index
from . import ondisk
from .rerank import Dba

FORMAT = "alexsuite-index/1"
INDEX_FILE, META_FILE, MANIFEST_FILE, LOCK_FILE = "index.faiss", "meta.sqlite", "manifest.json", ".lock"
RAW_FILE = "raw.faiss"  # the embedded vectors of an index whose searchable ones are augmented (--dba)
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
DBA_SCHEMA = """
CREATE TABLE IF NOT EXISTS dba (
    id     INTEGER PRIMARY KEY,     -- the vector's id, in raw.faiss and index.faiss
    radius REAL NOT NULL            -- distance to its n-th nearest raw neighbour (inf: fewer than n)
);
"""


_UNREAD = object()  # raw.faiss not read yet (None: read, and absent)


class IndexBusyError(AlexsuiteError):
    """Another process is writing to this index."""


class IndexWriteError(AlexsuiteError):
    """The index folder cannot be written (read-only folder or file system, no permission)."""


def resolve_dir(name_or_path: str | os.PathLike) -> Path:
    """A bare name (no slash) means indexes/NAME; anything else is a path (never a file, and
    never `.` or `..` themselves: an index gets a folder of its own)."""
    text = str(name_or_path)
    if text.strip() in ("", ".", "..") or Path(text).name in ("", ".", ".."):
        raise ConfigError(f"--index {text!r}: give the index a name, or a path ending in a folder of its own")
    root = DEFAULT_ROOT / text if os.sep not in text and not text.startswith(".") else Path(text).expanduser()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"--index {display_path(root)}: a file is in the way; give an index name or folder")
    return root


INDEX_NAMES = {INDEX_FILE, META_FILE, META_FILE + "-wal", META_FILE + "-shm", MANIFEST_FILE, LOCK_FILE, RAW_FILE}


def check_index_folder(root: Path, rebuild: bool, images: str = "IMAGES") -> None:
    """An index is only ever written into a folder that is empty or holds an index: a folder
    of anything else (photos, documents, other indexes) is refused, so no write and no
    rebuild's swap can touch files that are not the index's own. An index that lost its
    manifest is damaged and needs --rebuild (and --model: the manifest named the model)."""
    if not root.is_dir():
        return
    foreign = sorted(
        n
        for n in os.listdir(root)
        if n not in INDEX_NAMES and not (n.startswith(".") and n.endswith(".tmp")) and not _is_lists_file(n)
    )
    if foreign:
        raise ConfigError(
            f"--index {display_path(root)}: this folder holds files that are not an index's "
            f"({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); give a new folder or an index"
        )
    damaged = not (root / MANIFEST_FILE).is_file() and ((root / META_FILE).exists() or (root / INDEX_FILE).exists())
    if damaged and not rebuild:
        raise DataError(
            f"{display_path(root)}: {MANIFEST_FILE} is missing though the index's other files are there; rebuild it "
            f"with `alexsuite index {images} --index {root} --rebuild --model MODEL`"
        )


def _is_lists_file(name: str) -> bool:
    """--on-disk's inverted lists, and the shards torchrun's processes write before the merge."""
    return (name.startswith("lists-") and name.endswith(".ivfdata")) or name.startswith(".shard-")


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
        self.dba = Dba.from_manifest(manifest.get("dba"), f"{root / MANIFEST_FILE}: dba")
        self._raw = _UNREAD
        self._gpu = None  # a GPU copy of the index for searching (faiss-gpu and --device cuda)

    # ---- opening -------------------------------------------------------------------------
    @staticmethod
    def exists(root: Path) -> bool:
        return (root / MANIFEST_FILE).is_file()

    @staticmethod
    def manifest_of(root: Path) -> dict:
        """The manifest alone, checked (no database opened)."""
        return _read_manifest(root)

    @classmethod
    def create(
        cls, root: Path, model: dict, layer: str, preprocess: dict, spec: faiss_index.IndexSpec, dba: Dba | None = None
    ) -> IndexStore:
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
            "dba": dba.to_dict() if dba else None,
        }
        atomic_write_text(root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
        db = _connect(root, write=True, create=True)
        if dba:
            db.executescript(DBA_SCHEMA)
        return cls(root, manifest, db, None)

    @classmethod
    def open_read(cls, root: Path) -> IndexStore:
        """Open for searching, read-only (a read-only folder or disk is fine); errors name the
        directory and the fix."""
        return cls._open(root, write=False)

    @classmethod
    def open_write(cls, root: Path) -> IndexStore:
        """Open for adding to it (caller holds the lock)."""
        store = cls._open(root, write=True)
        if store.dba:
            store.db.executescript(DBA_SCHEMA)
        return store

    @classmethod
    def _open(cls, root: Path, write: bool) -> IndexStore:
        recover(root)
        if not root.exists():
            raise DataError(f"{root}: no such index; build it with `alexsuite index IMAGES --index {root}`")
        manifest = _read_manifest(root)
        store = cls(root, manifest, _connect(root, write), None)
        store.index = store._read_index()
        return store

    def check_vectors_present(self, images: str = "IMAGES") -> None:
        """Rows without index.faiss (deleted or lost): the vectors must be made again."""
        if self.index is None and self.count():
            raise DataError(
                f"{self.root / INDEX_FILE} is missing though {META_FILE} lists {self.count():,} images: "
                f"rebuild it with `alexsuite index {images} --index {self.root} --rebuild`"
            )

    def _read_index(self) -> faiss.Index | None:
        path = self.root / INDEX_FILE
        if not path.exists():
            return None  # created, nothing committed yet
        try:
            index = ondisk.read(path)  # --on-disk: its lists mapped read-only from this folder
        except RuntimeError as e:
            index, missing = None, "ivfdata" in str(e)
        else:
            missing = False
        problem = "corrupt FAISS index file" if index is None else faiss_index.unfit(index, self.spec)
        if missing:
            problem = "its inverted-lists file (lists-*.ivfdata) is missing, truncated or unreadable"
        if problem:
            raise DataError(
                f"{path}: {problem}; rebuild with `alexsuite index IMAGES --index {self.root} --rebuild`"
            ) from None
        return index

    def read_raw(self) -> faiss.Index | None:
        """raw.faiss, read once (None if absent: nothing committed, or lost, and then embedded again)."""
        if self._raw is _UNREAD:
            self._raw = self._load_raw()
        return self._raw

    def _load_raw(self) -> faiss.Index | None:
        path = self.root / RAW_FILE
        if not path.exists():
            return None
        try:
            raw = faiss.read_index(str(path))
        except RuntimeError:
            raw = None
        fits = raw is not None and isinstance(faiss.downcast_index(raw), faiss.IndexIDMap2)
        if not fits or raw.d != self.spec.dim or raw.metric_type != self.spec.faiss_metric:
            raise DataError(
                f"{path}: not the raw vectors of this index; rebuild with `alexsuite index IMAGES --index {self.root} "
                "--rebuild`"
            )
        return raw

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

    def row_ids(self) -> np.ndarray:
        return np.array([r for (r,) in self.db.execute("SELECT id FROM images ORDER BY id")], np.int64)

    def radii(self) -> dict[int, float]:
        """Each DBA vector's n-th neighbour distance, by id."""
        return dict(self.db.execute("SELECT id, radius FROM dba"))

    def set_radii(self, ids, radii, deleted) -> None:
        """Inside the writer's transaction, with the rows they belong to."""
        self.db.executemany("DELETE FROM dba WHERE id = ?", [(int(i),) for i in deleted])
        self.db.executemany("INSERT OR REPLACE INTO dba VALUES (?, ?)", zip(map(int, ids), map(float, radii)))

    def all_rows(self) -> dict[int, Row]:
        return {r[0]: Row(*r[:6]) for r in self.db.execute("SELECT * FROM images")}

    def is_empty(self) -> bool:
        return self.index is None or self.count() == 0

    def stored_ids(self) -> np.ndarray:
        return faiss_index.stored_ids(self.index) if self.index is not None else np.empty(0, np.int64)

    def reconstruct(self, ids) -> np.ndarray:
        return faiss_index.reconstruct(self.index, ids)

    # ---- searching ---------------------------------------------------------------------------
    def use(self, params: str | None = None, device=None) -> None:
        """Search parameters (None: the index's own) and, with faiss-gpu and a CUDA device, a GPU
        copy of the index for the searches that follow."""
        params = self.spec.search_params if params is None else params
        faiss_index.set_search_params(self.index, params)
        if getattr(device, "type", "") == "cuda" and faiss_index.gpu_available() and self._gpu is None:
            with contextlib.suppress(RuntimeError):  # FAISS has no GPU version of this index type (e.g. HNSW)
                self._gpu = faiss_index.to_gpu(self.index, device.index or 0)
        elif self._gpu is not None:
            with contextlib.suppress(AlexsuiteError):  # a parameter only the CPU index has
                faiss_index.set_search_params(self._gpu, params)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Over-fetches by the number of vectors without a row (removed from an index type that
        cannot delete, or left by a killed writer), which callers skip."""
        k = k + self.dead_vectors()
        index = self._gpu if self._gpu is not None and k <= faiss_index.GPU_MAX_K else self.index
        return faiss_index.search(index, vectors, k, self.spec)

    def dead_vectors(self) -> int:
        """Vectors in the index without a row (removed but not removable, or a writer died)."""
        return max(0, (self.index.ntotal if self.index is not None else 0) - self.count())

    # ---- writing (caller holds the lock) ------------------------------------------------------
    def add_vectors(self, index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Into memory, or with --on-disk into a new list file (the one in use is never changed)."""
        if self.spec.on_disk:
            ondisk.add(index, faiss_index.prepare(vectors, self.spec), ids, self.root)
        else:
            faiss_index.add(index, vectors, ids, self.spec)

    def remove_vectors(self, index: faiss.Index, ids) -> bool:
        """False where this index type cannot remove (HNSW): searches then skip the ids."""
        if self.spec.on_disk and index.is_trained:
            ondisk.rewrite(index, self.root, remove=ids)
            return True
        return faiss_index.remove(index, ids)

    def save_index(self) -> None:
        atomic_write_bytes(
            self.root / INDEX_FILE, lambda f: faiss.write_index(self.index, faiss.PyCallbackIOWriter(f.write))
        )
        if self.spec.on_disk:
            ondisk.remove_unreferenced(self.root, ondisk.lists_file(self.index))

    def save_raw(self, raw: faiss.Index) -> None:
        atomic_write_bytes(self.root / RAW_FILE, lambda f: faiss.write_index(raw, faiss.PyCallbackIOWriter(f.write)))
        self._raw = raw

    def drop_orphans(self) -> int:
        """Remove vectors whose rows never committed (a writer was killed between the two)."""
        if self.index is None or not self.index.ntotal:
            return 0
        held = faiss_index.stored_ids(self.index)
        known = {r[0] for r in self.db.execute("SELECT id FROM images")}
        orphans = [int(i) for i in held if int(i) not in known]
        if orphans and self.remove_vectors(self.index, orphans):
            return len(orphans)
        return 0


COLUMNS = ["id", "path", "size", "mtime_ns", "sha256", "label", "added"]


def _connect(root: Path, write: bool, create: bool = False) -> sqlite3.Connection:
    """The metadata database: a new index's writer makes its tables; a writer of an existing
    index checks them (a database of anything else is refused, never filled); a reader opens
    it read-only, and where even that needs a write (a WAL database in a read-only folder) as
    immutable, which is safe because nothing can write there."""
    path = root / META_FILE
    try:
        if write:
            if not create and not path.is_file():
                raise DataError(
                    f"{path}: missing; rebuild the index with `alexsuite index IMAGES --index {root} --rebuild`"
                )
            db = sqlite3.connect(path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")  # readers go on while a writer commits
            if create:
                db.executescript(SCHEMA)
            return _checked(db, path, root)
        if not path.is_file():
            raise DataError(
                f"{path}: missing; rebuild the index with `alexsuite index IMAGES --index {root} --rebuild`"
            )
        uri = f"file:{quote(str(path.absolute()))}?mode=ro"
        try:  # any thread may read (the server's, under its own lock)
            db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
            db.execute("SELECT COUNT(*) FROM images").fetchone()
        except sqlite3.OperationalError:
            if os.access(root, os.W_OK):
                raise
            db = sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30, check_same_thread=False)
            db.execute("SELECT COUNT(*) FROM images").fetchone()
        return _checked(db, path, root)
    except sqlite3.DatabaseError as e:
        raise DataError(
            f"{path}: unreadable metadata database ({e}); rebuild the index "
            f"with `alexsuite index IMAGES --index {root} --rebuild`"
        ) from None


def _checked(db: sqlite3.Connection, path: Path, root: Path) -> sqlite3.Connection:
    columns = [r[1] for r in db.execute("PRAGMA table_info(images)")]
    has_counters = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'counters'").fetchone()
    if columns != COLUMNS or not has_counters:
        db.close()
        raise DataError(
            f"{path}: not this kind of index's database (its tables differ); rebuild the index with "
            f"`alexsuite index IMAGES --index {root} --rebuild`"
        )
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
    return check_manifest(manifest, path, FORMAT)


def check_manifest(manifest, where, fmt: str) -> dict:
    """A manifest of format `fmt` with the fields every reader needs, or one line naming the fix."""
    if not isinstance(manifest, dict) or manifest.get("format") != fmt:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise DataError(f"{where}: index format {found!r}, this alexsuite reads {fmt}")
    model = manifest.get("model")
    fields_ok = isinstance(model, dict) and all(
        isinstance(model.get(k), str) for k in ("source", "fingerprint", "arch")
    )
    if not fields_ok or not isinstance(manifest.get("layer"), str) or not isinstance(manifest.get("spec"), dict):
        raise DataError(
            f"{where}: a damaged manifest (model, layer or spec missing); rebuild with --rebuild and --model"
        )
    return manifest


@contextmanager
def writer_lock(root: Path, wait: float = 0.0):
    """Exclusive lock on the index directory; waits up to `wait` seconds, then refuses. The
    lock is taken again if the folder was swapped (a rebuild) while this process waited."""
    recover(root)
    root.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    while True:
        fd = _open_lock_file(root / LOCK_FILE)
        try:
            _lock(fd, root, deadline)
            if os.path.samestat(os.fstat(fd), os.stat(root / LOCK_FILE)):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the folder was replaced while we waited: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _open_lock_file(path: Path) -> int:
    """The lock file, which must be a regular file (a pipe or folder of that name is refused)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK, 0o644)
    except IsADirectoryError:
        raise IndexWriteError(f"{display_path(path)} is a folder, not a lock file: remove it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IndexWriteError(f"{display_path(path)} is not a lock file: remove it")
    return fd


def _lock(fd: int, root: Path, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                raise IndexBusyError(
                    f"{root}: another process (pid {holder}) is writing this index; wait for it, or pass --wait SECONDS"
                ) from None
            time.sleep(0.2)


@contextmanager
def write_errors(root: Path, report=None):
    """The OS's and SQLite's write failures as one line that says the fix. Every commit is
    atomic, so what was committed before stays searchable and a re-run carries on."""
    kept = f"; the {report.added + report.updated:,} image(s) committed before are kept" if report else ""
    where = display_path(root)
    try:
        yield
    except sqlite3.OperationalError as e:
        if "readonly" in str(e) or "unable to open" in str(e):
            raise IndexWriteError(
                f"{where}: cannot write this index ({e}); make the folder writable or use another --index"
            ) from None
        if "full" in str(e):
            raise DiskSpaceError(
                f"{where}: the disk is full{kept}: free some space and run the same command again"
            ) from None
        raise
    except OSError as e:
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR):
            raise IndexWriteError(
                f"{where}: cannot write here ({e.strerror}); make the folder writable or use another --index"
            ) from None
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskSpaceError(
                f"{where}: the disk is full{kept}: free some space and run the same command again"
            ) from None
        raise


def staging_dir(root: Path) -> Path:
    """Where a rebuild of `root` is made, beside it (same file system, so it can be swapped in)."""
    return root.parent / f".{root.name}.rebuild"


def swap_in(staging: Path, root: Path) -> None:
    """Put the rebuilt index in place of the old one: Linux exchanges the two folders in one
    step (renameat2); elsewhere the old one is renamed aside first, and `recover` puts it back
    if the process dies between the two renames."""
    aside = root.parent / f".{root.name}.old"
    shutil.rmtree(aside, ignore_errors=True)
    if root.exists() and _exchange(staging, root):
        shutil.rmtree(staging, ignore_errors=True)  # the old index, now under the staging name
        return
    if root.exists():
        os.rename(root, aside)
    os.rename(staging, root)
    shutil.rmtree(aside, ignore_errors=True)


def recover(root: Path) -> None:
    """An index renamed aside by a swap that did not finish comes back."""
    aside = root.parent / f".{root.name}.old"
    if not root.exists() and aside.is_dir():
        with contextlib.suppress(OSError):  # a read-only folder: the reader will say the index is missing
            os.rename(aside, root)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
    except (OSError, AttributeError):  # no renameat2 here (not Linux, or an old C library)
        return False


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

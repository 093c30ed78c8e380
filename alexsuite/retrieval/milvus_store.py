"""An index kept in Milvus: on a server or cluster (`milvus://HOST:PORT/COLLECTION`, token from
$MILVUS_TOKEN) or embedded in this process (`milvus-lite:PATH.db/COLLECTION`, Milvus Lite). The
same MilvusClient calls serve both.

Layout, for an index named COLLECTION:
- COLLECTION: one entity per indexed image, the vector and its row together: id (INT64 primary
  key, ours, never reused), vector (FLOAT_VECTOR, unit length for cosine), path, size, mtime_ns,
  sha256, label ('' for none: nullable fields need Milvus 2.5) and added (unix time). A vector
  cannot be without its row, so there are no dead vectors and nothing to check or clean up.
- COLLECTION__alexsuite: key/value rows (value is JSON; Milvus wants a vector field in every
  collection, so a dummy 2-d one): 'manifest' (as IndexStore's manifest.json, written once when
  the index is created) and 'next_id' (the id counter, written before the ids are used).
- A rebuild is made in COLLECTION__rebuild (+ its __alexsuite) and renamed into place; a process
  killed half way through the swap leaves a 'swapping' mark that the next open finishes.

Index types come from the FAISS factory strings users already pass (Flat, IVF<n>,Flat,
IVF<n>,PQ<m>, HNSW<M>; GPU_CAGRA and GPU_IVF_PQ on a GPU server). Milvus Lite 3.2 builds FLAT,
IVF_FLAT and HNSW only (IVF_PQ is accepted at creation but refused when loaded; GPU types never).

One writer at a time: for Milvus Lite an fcntl lock on PATH.db.COLLECTION.alexsuite-lock (one per
collection, so a rebuild's staging collection can be locked inside its index's lock); for a
server, a lease row in the `alexsuite__leases` collection, renewed every 10 s while held and free
30 s after its holder dies. The lease is best effort: Milvus has no compare-and-set, so two
writers that start within LEASE_SETTLE seconds of each other could both win, and host clocks
must agree to within seconds.

Milvus Lite lets one process at a time open a .db: a search while an index run writes the same
.db is refused with a message saying so; a server has no such limit.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, MissingExtra
from ..fileio import display_path
from ..version import __version__
from . import index as faiss_index
from .index import IndexSpec
from .store import IndexBusyError, Row, _lock, _open_lock_file, check_manifest

# gRPC logs at INFO that it skips its fork handlers each time the decoding workers start: noise
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
try:
    import pymilvus
    from pymilvus import DataType, MilvusClient, MilvusException
except ImportError:  # the module still imports; opening an index says what to install
    pymilvus = None

FORMAT = "alexsuite-milvus/1"
SERVER, LITE = "server", "lite"
SERVER_SCHEME, LITE_SCHEME = "milvus://", "milvus-lite:"
META_SUFFIX, STAGING_SUFFIX = "__alexsuite", "__rebuild"
LEASES = "alexsuite__leases"  # one collection per server holds every index's writer lease
NAME_MAX = 255 - len(STAGING_SUFFIX + META_SUFFIX)  # Milvus allows 255; the staging manifest's name must fit
DEFAULT_PORT = 19530
FORMS = "milvus://HOST:PORT/COLLECTION or milvus-lite:PATH.db/COLLECTION"
MAPPED = "Flat, IVF<n>,Flat, IVF<n>,PQ<m>, HNSW<M> (or GPU_CAGRA, GPU_IVF_PQ on a GPU server)"
INSTALL = "needs pymilvus and milvus-lite: pip install 'alexsuite[milvus]'"

DIM_MAX = 32768  # Milvus's largest FLOAT_VECTOR
PATH_BYTES, LABEL_BYTES, VALUE_BYTES = 4096, 1024, 65535  # VARCHAR lengths are UTF-8 bytes
TOPK_MAX = 16384  # a Milvus server returns at most this many results per query
PAGE = 10000  # rows per query when reading many (a server's query limit is 16384)
ID_CHUNK = 5000  # ids per `id in [...]` query or delete
BATCH_BYTES = 16 << 20  # vectors per insert: well under gRPC's 64 MiB message limit
QUERY_CELLS = 1 << 18  # queries x k per search call, to bound the reply's size
HNSW_EF_CONSTRUCTION = 40  # FAISS's default (faiss/impl/HNSW.h: efConstruction = 40), so HNSW32 builds alike
LITE_TYPES = ("FLAT", "IVF_FLAT", "HNSW")  # what Milvus Lite 3.2's index factory builds and loads
GPU_TYPES = ("GPU_CAGRA", "GPU_IVF_PQ")
DEFAULT_PARAMS = {"IVF_FLAT": "nprobe=16", "IVF_PQ": "nprobe=16", "GPU_IVF_PQ": "nprobe=16", "HNSW": "efSearch=128"}
SEARCH_PARAMS = {  # --params name: (Milvus's name, the index types that take it)
    "nprobe": ("nprobe", ("IVF_FLAT", "IVF_PQ", "GPU_IVF_PQ")),
    "efSearch": ("ef", ("HNSW",)),
    "ef": ("ef", ("HNSW",)),
    "itopk_size": ("itopk_size", ("GPU_CAGRA",)),
    "search_width": ("search_width", ("GPU_CAGRA",)),
}
ROW_FIELDS = ["id", "path", "size", "mtime_ns", "sha256", "label"]
ALL_FIELDS = [*ROW_FIELDS, "added", "vector"]
STRONG = "Strong"  # reads see every write acknowledged before them, the writer's own included
LEASE_SECONDS = 30.0
LEASE_SETTLE = 0.5  # a rival that read the same free lease has written its own by then; the last write wins
FLUSH_EVERY = 10.0  # a server rate-limits flush (0.1/s a collection) and its acknowledged writes are durable

_LITE_USERS: dict[str, int] = {}  # .db path -> our open clients; its embedded server stops with the last
_LITE_GUARD = threading.Lock()


class MilvusMissing(MissingExtra, ConfigError):
    """pymilvus or milvus-lite is not installed."""


# ---- addresses ----------------------------------------------------------------------------------
def parse_address(text: str) -> tuple[str, str, str]:
    """'milvus://HOST:PORT/COLLECTION' -> ('server', 'http://HOST:PORT', COLLECTION) (PORT defaults
    to 19530); 'milvus-lite:PATH.db/COLLECTION' -> ('lite', absolute PATH.db, COLLECTION)."""
    text = str(text)
    if text.startswith(SERVER_SCHEME):
        host, _, name = text[len(SERVER_SCHEME) :].partition("/")
        if re.fullmatch(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?", host) and _valid_name(name):
            return SERVER, f"http://{host if _has_port(host) else f'{host}:{DEFAULT_PORT}'}", name
    elif text.startswith(LITE_SCHEME):
        path, _, name = text[len(LITE_SCHEME) :].rpartition("/")
        if path.endswith(".db") and Path(path).name != ".db" and _valid_name(name):
            return LITE, os.path.abspath(os.path.expanduser(path)), name
    raise ConfigError(
        f"--index {text!r}: not a Milvus address; use {FORMS} (COLLECTION: letters, digits and _, "
        f"not starting with a digit, at most {NAME_MAX} characters)"
    )


def _valid_name(name: str) -> bool:
    return re.fullmatch(rf"[A-Za-z_][A-Za-z0-9_]{{0,{NAME_MAX - 1}}}", name) is not None


def _has_port(host: str) -> bool:
    return re.search(r":\d+$", host) is not None


def _meta(name: str) -> str:
    return name + META_SUFFIX


# ---- index types ----------------------------------------------------------------------------------
def milvus_index(spec: IndexSpec, kind: str) -> tuple[str, dict]:
    """spec.factory as a Milvus index type and its build parameters, or a one-line refusal."""
    if spec.pca:
        raise ConfigError(f"--pca {spec.pca} has no Milvus equivalent; leave it out and use {MAPPED}")
    index_type, params = _mapped(spec.factory, spec.dim)
    if kind == LITE and index_type in GPU_TYPES:
        raise ConfigError(
            f"--factory {spec.factory} needs a Milvus server with GPUs (milvus://HOST:PORT/COLLECTION); "
            f"Milvus Lite builds {', '.join(LITE_TYPES)} only"
        )
    if kind == LITE and index_type not in LITE_TYPES:
        raise ConfigError(
            f"--factory {spec.factory}: Milvus Lite cannot build {index_type}; use Flat, IVF<n>,Flat or HNSW<M>, "
            "or a Milvus server (milvus://HOST:PORT/COLLECTION)"
        )
    return index_type, params


def _mapped(factory: str, dim: int) -> tuple[str, dict]:
    text = factory.replace(" ", "")
    if text == "Flat":
        return "FLAT", {}
    if m := re.fullmatch(r"IVF(\d+),Flat", text):
        return "IVF_FLAT", {"nlist": _within(factory, int(m[1]), 1, 65536)}
    if m := re.fullmatch(r"IVF(\d+),PQ(\d+)", text):
        sub = _within(factory, int(m[2]), 1, dim)
        if dim % sub:
            raise ConfigError(f"--factory {factory}: PQ{sub} must divide the feature size {dim}; pick another m")
        return "IVF_PQ", {"nlist": _within(factory, int(m[1]), 1, 65536), "m": sub, "nbits": 8}
    if m := re.fullmatch(r"HNSW(\d+)(,Flat)?", text):
        return "HNSW", {"M": _within(factory, int(m[1]), 2, 2048), "efConstruction": HNSW_EF_CONSTRUCTION}
    if text == "GPU_CAGRA":
        return "GPU_CAGRA", {}  # Milvus's defaults: graph degree 64, intermediate 128
    if text == "GPU_IVF_PQ":  # as IVF1024,PQ64: m is 64, or the largest divisor of the feature size below it
        return "GPU_IVF_PQ", {"nlist": 1024, "m": max(d for d in range(1, min(64, dim) + 1) if dim % d == 0)}
    raise ConfigError(f"--factory {factory} has no Milvus equivalent; use {MAPPED}")


def _within(factory: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ConfigError(f"--factory {factory}: {value} is outside Milvus's range {low}..{high}; pick another")
    return value


def search_params(params: str, index_type: str, build: dict) -> dict:
    """A FAISS-style parameter string ('nprobe=16', 'efSearch=128') as Milvus search params."""
    out = {}
    for item in filter(None, (p.strip() for p in params.split(","))):
        name, _, value = item.partition("=")
        known = SEARCH_PARAMS.get(name.strip())
        if known is None or not value.strip().isdigit() or int(value) < 1:
            raise ConfigError(
                f"--params {params!r}: Milvus takes nprobe=N (IVF), efSearch=N (HNSW), "
                "itopk_size=N and search_width=N (GPU_CAGRA), N a positive whole number"
            )
        if index_type not in known[1]:
            raise ConfigError(f"--params {params!r}: {name} does not apply to a Milvus {index_type} index")
        out[known[0]] = int(value)
    if "nprobe" in out and "nlist" in build:
        out["nprobe"] = min(out["nprobe"], build["nlist"])  # FAISS clamps the same way; Milvus refuses more
    return out


# ---- connecting ----------------------------------------------------------------------------------
class _Connection:
    """A MilvusClient for one address. Milvus Lite runs a server inside this process per .db,
    stopped (and the .db let go, for other processes) when our last client of it closes."""

    def __init__(self, address: str):
        self.address = address
        self.kind, self.uri, self.name = parse_address(address)
        _require_pymilvus(address, self.kind)
        self.client = self._lite() if self.kind == LITE else self._server()

    def _server(self):
        try:
            return MilvusClient(uri=self.uri, token=os.environ.get("MILVUS_TOKEN", ""), timeout=10)
        except MilvusException as e:
            raise ConfigError(
                f"{self.address}: cannot reach Milvus at {self.uri} ({_reason(e)}); start Milvus there, "
                "or check $MILVUS_TOKEN"
            ) from None

    def _lite(self):
        os.makedirs(os.path.dirname(self.uri), exist_ok=True)
        with _LITE_GUARD:
            if not _LITE_USERS.get(self.uri):
                _check_lite_free(self.uri, self.address)
            try:
                client = MilvusClient(self.uri)
            except Exception as e:  # pymilvus raises its own exception types and plain ones from Milvus Lite
                raise DataError(f"{self.address}: Milvus Lite cannot open {self.uri} ({_reason(e)})") from None
            _LITE_USERS[self.uri] = _LITE_USERS.get(self.uri, 0) + 1
        return client

    def close(self) -> None:
        if self.client is None:
            return
        self.client.close()
        self.client = None
        if self.kind == LITE:
            with _LITE_GUARD:
                _LITE_USERS[self.uri] -= 1
                if not _LITE_USERS[self.uri]:
                    from milvus_lite.server_manager import server_manager_instance

                    server_manager_instance.release_server(self.uri)

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _require_pymilvus(address: str, kind: str) -> None:
    if pymilvus is None:
        raise MilvusMissing(f"--index {address}: {INSTALL}")
    if kind == LITE:
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise MilvusMissing(f"--index {address}: {INSTALL}") from None


def _check_lite_free(path: str, address: str) -> None:
    """Milvus Lite holds an flock on PATH.db/LOCK while a process has the .db open; say so in
    one line instead of its traceback."""
    try:
        fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR)
    except OSError:  # no LOCK yet (a new .db), or not ours to open: Milvus Lite will say
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise IndexBusyError(
            f"{address}: another process has {path} open, and Milvus Lite lets one process at a time use a .db; "
            "wait for it to finish, or use a Milvus server (milvus://HOST:PORT/COLLECTION)"
        ) from None
    finally:
        os.close(fd)  # closing lets go of our test lock


def _reason(e: Exception) -> str:
    """Milvus's own sentence, on one line."""
    text = getattr(e, "message", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())[:240]


# ---- the manifest collection -----------------------------------------------------------------------
def _create_keyed(client, name: str) -> None:
    """A key/value collection (manifests, leases): Milvus requires a vector field, so a dummy one."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", DataType.VARCHAR, max_length=255, is_primary=True)
    schema.add_field("value", DataType.VARCHAR, max_length=VALUE_BYTES)
    schema.add_field("dummy", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("dummy", index_type="FLAT", metric_type="L2")
    _make_collection(client, name, schema, index)


def _make_collection(client, name: str, schema, index) -> None:
    """Create, index and load a collection. The indexes are made on the empty collection without
    pymilvus's wait for them to be built (it polls every 0.5 s; there is nothing to build yet)."""
    client.create_collection(name, schema=schema, consistency_level=STRONG)
    client.create_index(name, index, sync=False)
    client.load_collection(name)


def _get(client, name: str, key: str):
    rows = client.query(name, filter=f"key == {_literal(key)}", output_fields=["value"], consistency_level=STRONG)
    return json.loads(rows[0]["value"]) if rows else None


def _put(client, name: str, key: str, value) -> None:
    client.upsert(name, [{"key": key, "value": json.dumps(value), "dummy": [0.0, 0.0]}])


def _literal(text: str) -> str:
    """A string as a Milvus filter literal (C-style escapes, as both Milvus and Milvus Lite read)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def _manifest(client, name: str):
    """The stored manifest, or None when there is no index of that name."""
    if not client.has_collection(_meta(name)):
        return None
    client.load_collection(_meta(name))  # Milvus Lite opens every collection released
    return _get(client, _meta(name), "manifest")


def _checked(manifest, address: str) -> dict:
    """As store._read_manifest checks manifest.json."""
    return check_manifest(manifest, f"{address} ({_meta(parse_address(address)[2])})", FORMAT)


def _absent(address: str) -> DataError:
    return DataError(f"{address}: no such index; build it with `alexsuite index IMAGES --index {address}`")


# ---- swapping a rebuild in ---------------------------------------------------------------------
def _finish_swap(client, staging: str, name: str) -> None:
    """Drop the old index and rename the staging one into its place; each step is skipped when
    done, so a swap cut short by a kill is finished by whoever opens the index next."""
    if client.has_collection(_meta(name)):
        client.drop_collection(_meta(name))  # from here on the index reads as absent, not half old
    if client.has_collection(staging):
        if client.has_collection(name):
            client.drop_collection(name)
        client.rename_collection(staging, name)
    client.rename_collection(_meta(staging), _meta(name))
    client.load_collection(name)  # a renamed collection comes back released
    client.load_collection(_meta(name))
    client.delete(_meta(name), ids=["swapping"])


def _recover(client, name: str) -> None:
    """A swap that a kill cut short (no manifest, and a staging one marked 'swapping') is finished."""
    staging = name + STAGING_SUFFIX
    if client.has_collection(_meta(name)) or not client.has_collection(_meta(staging)):
        return
    client.load_collection(_meta(staging))
    if _get(client, _meta(staging), "swapping"):
        _finish_swap(client, staging, name)


# ---- the writer's lease on a server --------------------------------------------------------------
@contextmanager
def _server_lease(conn: _Connection, wait: float):
    """Hold the lease row for conn.name in LEASES, renewed in the background, for the block."""
    me = {"owner": uuid.uuid4().hex, "pid": os.getpid(), "host": socket.gethostname()}
    if not conn.client.has_collection(LEASES):
        with contextlib.suppress(MilvusException):  # another writer made it first
            _create_keyed(conn.client, LEASES)
    conn.client.load_collection(LEASES)
    deadline = time.monotonic() + wait
    while (holder := _take_lease(conn.client, conn.name, me)) is not None:
        if time.monotonic() >= deadline:
            raise IndexBusyError(
                f"{conn.address}: another process (pid {holder.get('pid', '?')} on {holder.get('host', '?')}) is "
                "writing this index; wait for it, or pass --wait SECONDS"
            )
        time.sleep(0.5)
    stop = threading.Event()
    renewer = threading.Thread(target=_renew_lease, args=(conn.client, conn.name, me, stop), daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(MilvusException):  # unreachable now: the lease runs out by itself
            if (_get(conn.client, LEASES, conn.name) or {}).get("owner") == me["owner"]:
                conn.client.delete(LEASES, ids=[conn.name])


def _take_lease(client, key: str, me: dict) -> dict | None:
    """None once the lease is ours; else who holds it."""
    held = _get(client, LEASES, key)
    if held and held.get("owner") != me["owner"] and held.get("until", 0) > time.time():
        return held
    _put(client, LEASES, key, {**me, "until": time.time() + LEASE_SECONDS})
    time.sleep(LEASE_SETTLE)
    held = _get(client, LEASES, key)
    return None if held and held.get("owner") == me["owner"] else (held or {})


def _renew_lease(client, key: str, me: dict, stop: threading.Event) -> None:
    while not stop.wait(LEASE_SECONDS / 3):
        with contextlib.suppress(MilvusException):  # a blip: the next renewal is in time
            _put(client, LEASES, key, {**me, "until": time.time() + LEASE_SECONDS})


# ---- the store ---------------------------------------------------------------------------------
class MilvusStore:
    """An opened Milvus index. Use `create`, `open_read` or `open_write`; `close` when done."""

    dba = None  # database-side augmentation is not offered here

    def __init__(self, conn: _Connection, manifest: dict):
        self._conn = conn
        self._client = conn.client
        self.root = conn.address
        self.name = conn.name
        self.manifest = manifest
        self.spec = IndexSpec.from_dict(manifest["spec"], f"{conn.address}: spec")
        self.index_type, self._build = milvus_index(self.spec, conn.kind)
        self._params = search_params(self._default_params(), self.index_type, self._build)
        self._flushed = 0.0

    # ---- opening -------------------------------------------------------------------------
    @staticmethod
    def exists(address: str) -> bool:
        kind, uri, name = parse_address(address)
        if kind == LITE and not os.path.isdir(uri):
            return False  # never make a .db just to look
        with _Connection(address) as conn:
            _recover(conn.client, name)
            return _manifest(conn.client, name) is not None

    @staticmethod
    def manifest_of(address: str) -> dict:
        """The manifest alone, checked."""
        kind, uri, name = parse_address(address)
        if kind == LITE and not os.path.isdir(uri):
            raise _absent(address)
        with _Connection(address) as conn:
            _recover(conn.client, name)
            manifest = _manifest(conn.client, name)
        if manifest is None:
            raise _absent(address)
        return _checked(manifest, address)

    @classmethod
    def create(cls, address: str, model: dict, layer: str, preprocess: dict, spec: IndexSpec) -> MilvusStore:
        """Make the collections of a new, empty index (caller holds the writer lock). An index
        that holds nothing yet is replaced; anything else of that name is refused."""
        kind, _, name = parse_address(address)
        index_type, build = milvus_index(spec, kind)  # refuses before anything is made
        if spec.dim > DIM_MAX:
            raise ConfigError(
                f"{address}: Milvus holds vectors of at most {DIM_MAX:,} numbers; this layer has {spec.dim:,}"
            )
        manifest = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "alexsuite": __version__,
            "pymilvus": pymilvus.__version__ if pymilvus else None,
            "model": model,
            "layer": layer,
            "preprocess": preprocess,
            "spec": spec.to_dict(),
            "dba": None,
        }
        conn = _Connection(address)
        try:
            _clear_for_create(conn.client, name, address)
            _create_data(conn.client, name, spec, index_type, build)
            _create_keyed(conn.client, _meta(name))
            _put(conn.client, _meta(name), "next_id", 0)
            _put(conn.client, _meta(name), "manifest", manifest)  # last: with it, the index exists
        except BaseException:
            conn.close()
            raise
        return cls(conn, manifest)

    @classmethod
    def open_read(cls, address: str) -> MilvusStore:
        """Open for searching; errors name the address and the fix."""
        return cls._open(address)

    @classmethod
    def open_write(cls, address: str) -> MilvusStore:
        """Open for adding to it (caller holds the writer lock)."""
        return cls._open(address)

    @classmethod
    def _open(cls, address: str) -> MilvusStore:
        kind, uri, name = parse_address(address)
        if kind == LITE and not os.path.isdir(uri):
            raise _absent(address)
        conn = _Connection(address)
        try:
            _recover(conn.client, name)
            manifest = _manifest(conn.client, name)
            if manifest is None:
                raise _absent(address)
            _checked(manifest, address)
            if not conn.client.has_collection(name):
                raise DataError(
                    f"{address}: the collection is missing though its manifest is there; rebuild it with "
                    f"`alexsuite index IMAGES --index {address} --rebuild`"
                )
            conn.client.load_collection(name)  # Milvus Lite opens collections released
            conn.client.load_collection(_meta(name))
            return cls(conn, manifest)
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def drop(address: str) -> None:
        """The collection and its manifest gone (--rebuild)."""
        kind, uri, name = parse_address(address)
        if kind == LITE and not os.path.isdir(uri):
            return
        with _Connection(address) as conn:
            for each in (_meta(name), name):  # the manifest first: a half-dropped index reads as absent
                if conn.client.has_collection(each):
                    conn.client.drop_collection(each)

    def close(self) -> None:
        self._conn.close()

    # ---- reading ---------------------------------------------------------------------------
    def count(self) -> int:
        rows = self._client.query(self.name, filter="", output_fields=["count(*)"], consistency_level=STRONG)
        return int(rows[0]["count(*)"])

    def is_empty(self) -> bool:
        return self.count() == 0

    def check_vectors_present(self, images: str = "IMAGES") -> None:
        """Nothing to check: a vector and its row are one entity."""

    def rows_by_id(self, ids) -> dict[int, Row]:
        return {r.id: r for r in map(_row, self._by_ids([int(i) for i in ids if i >= 0], ROW_FIELDS))}

    def row_by_path(self, path: Path) -> Row | None:
        rows = self._client.query(
            self.name, filter=f"path == {_literal(str(path))}", output_fields=ROW_FIELDS, consistency_level=STRONG
        )
        return _row(max(rows, key=lambda e: e["id"])) if rows else None  # the newest, should a path repeat

    def rows_under(self, folder: Path) -> dict[str, Row]:
        prefix = str(folder).rstrip(os.sep) + os.sep
        # LIKE has no escape for % and _ in Milvus Lite: match up to the first of them, then check here
        plain = re.split(r"[%_\\]", prefix, maxsplit=1)[0]
        found = self._scan(f"path like {_literal(plain + '%')}", ROW_FIELDS)
        return {e["path"]: _row(e) for e in found if e["path"].startswith(prefix)}

    def all_rows(self) -> dict[int, Row]:
        return {r.id: r for r in map(_row, self._scan("", ROW_FIELDS))}

    def row_ids(self) -> np.ndarray:
        return np.sort(np.array([e["id"] for e in self._scan("", ["id"])], np.int64))

    def stored_ids(self) -> np.ndarray:
        return self.row_ids()

    def dead_vectors(self) -> int:
        return 0

    def reconstruct(self, ids) -> np.ndarray:
        """The stored vectors of `ids` (unit length for cosine), float32 (n, d) in their order."""
        ids = [int(i) for i in np.asarray(ids, np.int64).ravel()]
        found = {e["id"]: e["vector"] for e in self._by_ids(sorted(set(ids)), ["id", "vector"])}
        missing = [i for i in ids if i not in found]
        if missing:
            raise DataError(f"{self.root}: no vector for id(s) {', '.join(map(str, missing[:5]))}; the images are gone")
        if not ids:
            return np.empty((0, self.spec.dim), np.float32)
        return np.asarray([found[i] for i in ids], np.float32)

    def _by_ids(self, ids: list[int], fields: list[str]) -> list[dict]:
        out = []
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            out += self._client.query(self.name, ids=chunk, output_fields=fields, consistency_level=STRONG)
        return out

    def _scan(self, condition: str, fields: list[str]) -> list[dict]:
        """Every entity that meets `condition`, a page of ids at a time (a server caps what one
        query returns; pages by id range never skip or repeat an entity)."""
        out, top = [], self.next_id()
        for start in range(0, top, PAGE):
            ranged = f"id >= {start} and id < {start + PAGE}"
            where = f"({condition}) and {ranged}" if condition else ranged
            out += self._client.query(
                self.name, filter=where, output_fields=fields, limit=PAGE, consistency_level=STRONG
            )
        return out

    # ---- searching ---------------------------------------------------------------------------
    def _default_params(self) -> str:
        return self.spec.search_params or DEFAULT_PARAMS.get(self.index_type, "")

    def use(self, params: str | None = None, device=None) -> None:
        """Search parameters (None: the index's own) for the searches that follow; the device is
        the server's business (a GPU index runs on the server's GPU)."""
        self._params = search_params(self._default_params() if params is None else params, self.index_type, self._build)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, ids), each (Q, k): Euclidean for l2 (Milvus gives squares), 1 - cosine for
        cosine; ids -1 (distance inf) where fewer than k were found."""
        queries = faiss_index.prepare(np.atleast_2d(vectors), self.spec)
        if queries.shape[1] != self.spec.dim:
            raise DataError(f"{self.root}: {queries.shape[1]}-d query vectors, this index holds {self.spec.dim}-d ones")
        k = max(1, int(k))
        fetch = min(k, TOPK_MAX)
        if k > TOPK_MAX and self.count() > TOPK_MAX:
            raise ConfigError(f"{self.root}: Milvus returns at most {TOPK_MAX:,} neighbours a query; ask for fewer")
        distances = np.full((len(queries), k), np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        step = max(1, QUERY_CELLS // fetch)
        for start in range(0, len(queries), step):
            hits = self._client.search(
                self.name,
                data=list(queries[start : start + step]),
                limit=fetch,
                search_params={"params": self._search_params(fetch)},
                output_fields=["id"],
                consistency_level=STRONG,
            )
            for row, found in enumerate(hits, start):
                got_ids, got = _hit_arrays(found)
                ids[row, : len(got_ids)] = got_ids
                distances[row, : len(got)] = got
        return self._distances(distances, ids), ids

    def _search_params(self, k: int) -> dict:
        params = dict(self._params)
        if "ef" in params:
            params["ef"] = max(params["ef"], k)  # HNSW refuses ef < k
        if self.index_type == "GPU_CAGRA":
            params["itopk_size"] = max(params.get("itopk_size", 128), k)  # CAGRA needs itopk_size >= k
        return params

    def _distances(self, raw: np.ndarray, ids: np.ndarray) -> np.ndarray:
        found = ids >= 0
        if self.spec.metric == "cosine":
            raw[found] = 1.0 - raw[found]  # Milvus COSINE gives the similarity
        else:
            raw[found] = np.sqrt(np.maximum(raw[found], 0.0))
        return raw

    # ---- writing (the caller holds the writer lock) -------------------------------------------
    def next_id(self) -> int:
        """Ids are never reused, even after the newest image is removed: a cached result must
        never name an old vector under a new file's name."""
        value = _get(self._client, _meta(self.name), "next_id")
        return int(value or 0)

    def reserve_ids(self, n: int) -> int:
        """The first of n fresh ids; the counter is written before this returns, so a writer
        killed later never hands the same ids out again."""
        if n < 0:
            raise ValueError(f"reserve_ids({n}): n must be 0 or more")
        first = self.next_id()
        _put(self._client, _meta(self.name), "next_id", first + n)
        return first

    def upsert(self, ids, vectors, rows) -> None:
        """Add or replace the entities `ids`: vectors (n, d) and rows of (path, size, mtime_ns,
        sha256, label, added); doing it twice leaves one entity each."""
        ids = [int(i) for i in ids]
        vectors = faiss_index.prepare(np.asarray(vectors).reshape(len(ids), -1), self.spec)
        if vectors.shape[1] != self.spec.dim or len(rows) != len(ids):
            raise DataError(
                f"{self.root}: {len(rows)} rows and {vectors.shape[1]}-d vectors for {len(ids)} ids; this index "
                f"holds {self.spec.dim}-d vectors, one row each"
            )
        entities = [_entity(i, v, r) for i, v, r in zip(ids, vectors, rows)]
        self._write(entities)

    def _write(self, entities: list[dict]) -> None:
        step = max(1, BATCH_BYTES // (4 * self.spec.dim + 512))
        for start in range(0, len(entities), step):
            self._client.upsert(self.name, entities[start : start + step])

    def remove(self, ids) -> None:
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), ID_CHUNK):
            self._client.delete(self.name, ids=ids[start : start + ID_CHUNK])

    def touch(self, items) -> None:
        """New size and mtime for unchanged content: items of (size, mtime_ns, id). The whole
        entity is written back (a partial update needs Milvus 2.6)."""
        changes = {int(i): (int(size), int(mtime)) for size, mtime, i in items}
        entities = self._by_ids(sorted(changes), ALL_FIELDS)
        for e in entities:
            e["size"], e["mtime_ns"] = changes[e["id"]]
            e["vector"] = np.asarray(e["vector"], np.float32)
        self._write([{k: e[k] for k in ALL_FIELDS} for e in entities])

    def flush(self) -> None:
        """Seal what was written into Milvus's segments (Milvus Lite: from its log into data files).
        Acknowledged writes are durable and visible already; a server flushes at most every 10 s."""
        if self._conn.kind == SERVER and time.monotonic() - self._flushed < FLUSH_EVERY:
            return
        self._client.flush(self.name)
        self._client.flush(_meta(self.name))
        self._flushed = time.monotonic()

    # ---- one writer, and rebuilds ---------------------------------------------------------------
    @staticmethod
    @contextmanager
    def writer_lock(address: str, wait: float = 0.0):
        """One writer at a time, waiting up to `wait` seconds, then IndexBusyError."""
        kind, uri, name = parse_address(address)
        if kind == SERVER:
            with _Connection(address) as conn, _server_lease(conn, wait):
                yield
            return
        os.makedirs(os.path.dirname(uri), exist_ok=True)
        fd = _open_lock_file(Path(f"{uri}.{name}.alexsuite-lock"))
        try:
            _lock(fd, address, time.monotonic() + wait)
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    @staticmethod
    def staging(address: str) -> str:
        """Where a rebuild of `address` is made: a collection beside it, swapped in when done."""
        parse_address(address)
        return address + STAGING_SUFFIX

    @staticmethod
    def swap_in(staging: str, address: str) -> None:
        """Replace the index at `address` by the one at `staging` (Milvus's rename_collection; a
        kill part way is finished by the next open)."""
        kind, uri, name = parse_address(address)
        if parse_address(staging)[:2] != (kind, uri) or parse_address(staging)[2] != name + STAGING_SUFFIX:
            raise ConfigError(f"{staging}: not the staging collection of {address}; use MilvusStore.staging")
        with _Connection(address) as conn:
            if _manifest(conn.client, name + STAGING_SUFFIX) is None:
                raise _absent(staging)
            _put(conn.client, _meta(name + STAGING_SUFFIX), "swapping", True)
            _finish_swap(conn.client, name + STAGING_SUFFIX, name)


# ---- helpers ------------------------------------------------------------------------------------
def _create_data(client, name: str, spec: IndexSpec, index_type: str, build: dict) -> None:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dim)
    schema.add_field("path", DataType.VARCHAR, max_length=PATH_BYTES)
    schema.add_field("size", DataType.INT64)
    schema.add_field("mtime_ns", DataType.INT64)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("label", DataType.VARCHAR, max_length=LABEL_BYTES)
    schema.add_field("added", DataType.DOUBLE)
    index = client.prepare_index_params()
    metric = "COSINE" if spec.metric == "cosine" else "L2"
    # build params as one JSON "params" entry: Milvus Lite reads only that, servers merge it as the flat keys
    index.add_index("vector", index_type=index_type, metric_type=metric, params={"params": build})
    index.add_index("path", index_type="INVERTED")  # row_by_path and rows_under without a full scan
    try:
        _make_collection(client, name, schema, index)
    except MilvusException as e:
        raise ConfigError(
            f"Milvus cannot make a {index_type} index for --factory {spec.factory} ({_reason(e)})"
        ) from None


def _clear_for_create(client, name: str, address: str) -> None:
    """An index that holds nothing (a first run that failed) or the leftovers of a create that
    was killed are dropped; a collection with rows, or of someone else's, is refused."""
    if not client.has_collection(name):
        if client.has_collection(_meta(name)):
            client.drop_collection(_meta(name))
        return
    fields = [f["name"] for f in client.describe_collection(name)["fields"]]
    client.load_collection(name)
    rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level=STRONG)[0]["count(*)"]
    if sorted(fields) != sorted(ALL_FIELDS) or rows:
        raise ConfigError(
            f"{address}: a collection of that name already holds {rows:,} entities; use another COLLECTION, "
            "or add to it without --factory changes (--rebuild starts over)"
        )
    for each in (_meta(name), name):
        if client.has_collection(each):
            client.drop_collection(each)


def _entity(i: int, vector: np.ndarray, row) -> dict:
    path, size, mtime_ns, sha256, label, added = row
    path = str(path)
    try:
        too_long = len(path.encode()) > PATH_BYTES
    except UnicodeEncodeError:
        too_long = True
    if too_long:
        raise DataError(
            f"{display_path(path)}: Milvus stores paths of UTF-8 text up to {PATH_BYTES} bytes; rename the file"
        )
    return {
        "id": i,
        "vector": vector,
        "path": path,
        "size": int(size),
        "mtime_ns": int(mtime_ns),
        "sha256": str(sha256),
        "label": label or "",
        "added": float(added),
    }


def _row(e: dict) -> Row:
    return Row(int(e["id"]), e["path"], int(e["size"]), int(e["mtime_ns"]), e["sha256"], e["label"] or None)


def _hit_arrays(hits) -> tuple[np.ndarray, np.ndarray]:
    """A query's hits as (ids, raw distances), without making an object per hit where pymilvus
    keeps them as columns."""
    got_ids, got = getattr(hits, "ids", None), getattr(hits, "distances", None)
    if got_ids is None or got is None:
        got_ids, got = [h["id"] for h in hits], [h["distance"] for h in hits]
    return np.asarray(got_ids, np.int64), np.asarray(got, np.float32)

"""MilvusStore against a real Milvus Lite in tmp_path (a Milvus server cannot be run here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from alexsuite.errors import ConfigError, DataError  # noqa: E402
from alexsuite.retrieval import milvus_store as ms  # noqa: E402
from alexsuite.retrieval.index import IndexSpec  # noqa: E402
from alexsuite.retrieval.milvus_store import MilvusStore, parse_address  # noqa: E402
from alexsuite.retrieval.store import IndexBusyError, Row  # noqa: E402

MODEL = {"source": "/models/alexnet.pt", "fingerprint": "f00d", "arch": "alexnet", "size": 1, "mtime_ns": 2}
PREPROCESS = {"resize": 256, "crop": 224}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def address(tmp_path, name: str = "images") -> str:
    return f"milvus-lite:{tmp_path / 'milvus.db'}/{name}"


def make(where: str, dim: int = 16, factory: str = "Flat", metric: str = "l2", **spec) -> MilvusStore:
    return MilvusStore.create(
        where, MODEL, "fc7", PREPROCESS, IndexSpec(dim=dim, factory=factory, metric=metric, **spec)
    )


def rows_for(ids, folder: str = "/photos/cats") -> list[tuple]:
    return [(f"{folder}/{i}.jpg", 100 + i, 1_000 + i, f"{i:064x}", "cats" if i % 2 else None, 1.5) for i in ids]


def fill(store: MilvusStore, vectors: np.ndarray, folder: str = "/photos/cats") -> np.ndarray:
    first = store.reserve_ids(len(vectors))
    ids = np.arange(first, first + len(vectors))
    store.upsert(ids, vectors, rows_for(ids, folder))
    store.flush()
    return ids


def brute_force(base: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if metric == "cosine":
        b = base / np.linalg.norm(base, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        d = 1.0 - q @ b.T
    else:
        d = np.sqrt(((queries[:, None, :] - base[None, :, :]) ** 2).sum(-1))
    order = np.argsort(d, axis=1)[:, :k]
    return np.take_along_axis(d, order, 1), order


@pytest.fixture
def store(tmp_path):
    s = make(address(tmp_path))
    yield s
    s.close()


# ---- addresses and manifests -----------------------------------------------------------------------
def test_parse_address_accepts_both_forms(tmp_path):
    assert parse_address("milvus://db.example.com:19531/images_v2") == (
        "server",
        "http://db.example.com:19531",
        "images_v2",
    )
    assert parse_address("milvus://localhost/_x") == ("server", "http://localhost:19530", "_x")
    kind, path, name = parse_address(f"milvus-lite:{tmp_path}/a/b.db/coll")
    assert (kind, path, name) == ("lite", str(tmp_path / "a" / "b.db"), "coll")
    assert parse_address("milvus-lite:rel.db/c")[1] == os.path.join(os.getcwd(), "rel.db")


@pytest.mark.parametrize(
    "text",
    [
        "milvus://host:19530",
        "milvus://host:19530/",
        "milvus://host:19530/9lives",
        "milvus://host:19530/with-dash",
        "milvus://host:19530/db/coll",
        "milvus://host:port/coll",
        "milvus-lite:index.sqlite/coll",
        "milvus-lite:index.db",
        "milvus-lite:index.db/",
        "milvus-lite:.db/coll",
        "milvus-lite:index.db/" + "a" * (ms.NAME_MAX + 1),
    ],
)
def test_malformed_addresses_are_refused_in_one_line(text):
    with pytest.raises(ConfigError) as e:
        parse_address(text)
    message = str(e.value)
    assert (
        "\n" not in message
        and "milvus://HOST:PORT/COLLECTION" in message
        and "milvus-lite:PATH.db/COLLECTION" in message
    )


def test_create_open_and_manifest_round_trip(tmp_path):
    where = address(tmp_path)
    assert not MilvusStore.exists(where)
    created = make(where, dim=24, factory="HNSW16", metric="cosine", search_params="efSearch=64")
    created.close()
    assert MilvusStore.exists(where)
    manifest = MilvusStore.manifest_of(where)
    assert manifest == created.manifest
    assert manifest["format"] == ms.FORMAT and manifest["dba"] is None
    assert manifest["model"] == MODEL and manifest["layer"] == "fc7" and manifest["preprocess"] == PREPROCESS
    opened = MilvusStore.open_read(where)
    try:
        assert opened.root == where and opened.spec == created.spec and opened.dba is None
        assert opened.spec.factory == "HNSW16" and opened.index_type == "HNSW"
        assert opened.is_empty() and opened.count() == 0 and opened.next_id() == 0
        assert opened.dead_vectors() == 0 and len(opened.row_ids()) == 0
        opened.check_vectors_present()
    finally:
        opened.close()


def test_missing_index_says_how_to_build_it(tmp_path):
    nowhere = address(tmp_path)
    with pytest.raises(DataError, match="no such index; build it with `alexsuite index IMAGES --index "):
        MilvusStore.manifest_of(nowhere)
    assert not (tmp_path / "milvus.db").exists()  # looking made nothing
    make(nowhere).close()
    other = address(tmp_path, "other")  # the .db exists, this collection does not
    with pytest.raises(DataError, match="no such index"):
        MilvusStore.manifest_of(other)
    with pytest.raises(DataError, match="no such index"):
        MilvusStore.open_read(other)


def test_create_replaces_an_empty_index_and_refuses_a_full_one(tmp_path):
    where = address(tmp_path)
    first = make(where, factory="Flat")
    first.close()
    second = make(where, factory="HNSW8")  # nothing committed yet: new settings apply
    fill(second, np.random.default_rng(0).standard_normal((5, 16)).astype(np.float32))
    second.close()
    assert MilvusStore.manifest_of(where)["spec"]["factory"] == "HNSW8"
    with pytest.raises(ConfigError, match="already holds 5 entities"):
        make(where)
    MilvusStore.drop(where)
    assert not MilvusStore.exists(where)
    make(where).close()


# ---- searching -----------------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_flat_search_equals_brute_force(tmp_path, metric):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 24)).astype(np.float32)
    queries = rng.standard_normal((20, 24)).astype(np.float32)
    store = make(address(tmp_path), dim=24, metric=metric)
    try:
        ids = fill(store, base)
        distances, found = store.search(queries, 10)
        want_d, want_i = brute_force(base, queries, 10, metric)
        assert found.dtype == np.int64 and distances.dtype == np.float32 and found.shape == (20, 10)
        np.testing.assert_array_equal(found, ids[want_i])
        np.testing.assert_allclose(distances, want_d, rtol=1e-4, atol=1e-4)
        distances, found = store.search(queries[:3], 305)  # more than there are
        assert found.shape == (3, 305)
        assert (found[:, :300] >= 0).all() and (found[:, 300:] == -1).all()
        assert np.isinf(distances[:, 300:]).all() and np.isfinite(distances[:, :300]).all()
        assert sorted(found[0, :300]) == sorted(ids)
    finally:
        store.close()


def test_search_of_an_empty_index_finds_nothing(store):
    distances, found = store.search(np.ones((2, 16), np.float32), 4)
    assert (found == -1).all() and np.isinf(distances).all()


@pytest.mark.parametrize("factory", ["HNSW16", "IVF32,Flat"])
def test_approximate_indexes_reach_recall(tmp_path, factory):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((2000, 32)).astype(np.float32)
    queries = base[rng.choice(2000, 50, replace=False)] + 0.1 * rng.standard_normal((50, 32)).astype(np.float32)
    store = make(address(tmp_path), dim=32, factory=factory)
    try:
        ids = fill(store, base)
        built = store._client.describe_index(store.name, "vector")
        assert built["index_type"] == store.index_type and built["indexed_rows"] == 2000  # not a brute-force scan
        store.use()  # the defaults: nprobe=16 / efSearch=128
        _, found = store.search(queries, 10)
        _, want = brute_force(base, queries, 10, "l2")
        recall = np.mean([len(set(f) & set(ids[w])) / 10 for f, w in zip(found, want)])
        assert recall >= 0.9, f"{factory}: recall@10 {recall:.2f}"
    finally:
        store.close()


def test_search_params_map_and_refuse(tmp_path):
    ivf = make(address(tmp_path, "ivf"), factory="IVF8,Flat")
    hnsw = make(address(tmp_path, "hnsw"), factory="HNSW8")
    try:
        ivf.use("nprobe=64")
        assert ivf._search_params(10) == {"nprobe": 8}  # clamped to nlist, as FAISS does
        hnsw.use()
        assert hnsw._search_params(10) == {"ef": 128} and hnsw._search_params(500) == {"ef": 500}
        hnsw.use("efSearch=32")
        assert hnsw._search_params(10) == {"ef": 32}
        with pytest.raises(ConfigError, match="efSearch does not apply to a Milvus IVF_FLAT index"):
            ivf.use("efSearch=32")
        with pytest.raises(ConfigError, match="Milvus takes nprobe=N"):
            hnsw.use("k_factor_rf=4")
        with pytest.raises(ConfigError, match="Milvus takes nprobe=N"):
            ivf.use("nprobe=zero")
    finally:
        ivf.close()
        hnsw.close()


# ---- rows ------------------------------------------------------------------------------------------
def test_rows_touch_and_remove(store):
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((6, 16)).astype(np.float32)
    cats = fill(store, vectors[:3], "/photos/my_cats")
    same_prefix = fill(store, vectors[3:4], "/photos/myXcats")  # `_` is a LIKE wildcard: must not match
    odd = fill(store, vectors[4:6], '/photos/100%/"quoted"\\dir')
    assert store.count() == 6 and not store.is_empty()
    assert store.rows_by_id([cats[1], -1, 999]) == {
        cats[1]: Row(
            int(cats[1]), f"/photos/my_cats/{cats[1]}.jpg", 100 + cats[1], 1_000 + cats[1], f"{cats[1]:064x}", "cats"
        )
    }
    assert store.row_by_path(f"/photos/my_cats/{cats[0]}.jpg").label is None  # '' is read back as None
    assert store.row_by_path("/photos/my_cats/nope.jpg") is None
    under = store.rows_under("/photos/my_cats/")
    assert sorted(r.id for r in under.values()) == list(cats)
    assert set(under) == {f"/photos/my_cats/{i}.jpg" for i in cats}
    assert [r.id for r in store.rows_under('/photos/100%/"quoted"\\dir').values()] == list(odd)
    assert store.row_by_path(f'/photos/100%/"quoted"\\dir/{odd[1]}.jpg').id == odd[1]
    assert sorted(store.all_rows()) == sorted([*cats, *same_prefix, *odd])
    np.testing.assert_array_equal(store.row_ids(), np.sort(np.r_[cats, same_prefix, odd]))
    np.testing.assert_array_equal(store.stored_ids(), store.row_ids())

    store.touch([(7, 8, int(cats[2]))])
    touched = store.rows_by_id([cats[2]])[cats[2]]
    assert (touched.size, touched.mtime_ns, touched.path) == (7, 8, f"/photos/my_cats/{cats[2]}.jpg")
    np.testing.assert_allclose(store.reconstruct([cats[2]])[0], vectors[2], rtol=1e-6)
    _, found = store.search(vectors[2:3], 1)
    assert found[0, 0] == cats[2]  # the vector is still searchable

    store.remove([cats[0], odd[0]])
    store.flush()
    assert store.count() == 4 and store.rows_by_id([cats[0]]) == {}
    assert cats[0] not in store.all_rows() and store.row_by_path(f"/photos/my_cats/{cats[0]}.jpg") is None
    _, found = store.search(vectors[0:1], 6)
    assert cats[0] not in found and odd[0] not in found


def test_upsert_is_idempotent_and_reconstruct_gives_the_vectors(tmp_path):
    rng = np.random.default_rng(4)
    store = make(address(tmp_path), metric="cosine")
    try:
        ids = fill(store, rng.standard_normal((10, 16)).astype(np.float32))
        again = rng.standard_normal((10, 16)).astype(np.float32) * 3
        store.upsert(ids, again, rows_for(ids))
        store.upsert(ids, again, rows_for(ids))
        assert store.count() == 10 and len(store.all_rows()) == 10
        back = store.reconstruct(ids[::-1])
        assert back.dtype == np.float32 and back.shape == (10, 16)
        np.testing.assert_allclose(back, (again / np.linalg.norm(again, axis=1, keepdims=True))[::-1], atol=1e-6)
        assert store.reconstruct([]).shape == (0, 16)
        with pytest.raises(DataError, match="no vector for id"):
            store.reconstruct([ids[0], 12345])
    finally:
        store.close()


def test_reserved_ids_are_never_reused(tmp_path):
    where = address(tmp_path)
    store = make(where)
    ids = fill(store, np.random.default_rng(5).standard_normal((4, 16)).astype(np.float32))
    assert list(ids) == [0, 1, 2, 3] and store.next_id() == 4
    assert store.reserve_ids(3) == 4 and store.reserve_ids(0) == 7
    store.remove(ids)  # the newest rows gone: their ids stay spent
    store.close()
    store = MilvusStore.open_write(where)
    try:
        assert store.is_empty() and store.reserve_ids(2) == 7 and store.next_id() == 9
    finally:
        store.close()


def test_a_killed_writer_keeps_its_reservation_and_lite_refuses_a_second_process(tmp_path):
    where = address(tmp_path)
    make(where).close()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import sys, time
                from alexsuite.retrieval.milvus_store import MilvusStore
                store = MilvusStore.open_write({where!r})
                print(store.reserve_ids(50), flush=True)
                time.sleep(60)
            """),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "0"
        with pytest.raises(IndexBusyError, match="another process has .* open, and Milvus Lite lets one process"):
            MilvusStore.open_read(where)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    store = MilvusStore.open_write(where)
    try:
        assert store.reserve_ids(1) == 50
    finally:
        store.close()


# ---- refusals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("factory", "pca", "message"),
    [
        (
            "IVF16,SQ8",
            None,
            "--factory IVF16,SQ8 has no Milvus equivalent; use Flat, IVF<n>,Flat, IVF<n>,PQ<m>, HNSW<M>",
        ),
        ("ITQ64,LSHt", None, "has no Milvus equivalent; use Flat, IVF<n>,Flat"),
        ("PCA8,Flat", None, "has no Milvus equivalent"),
        ("Flat", 8, "--pca 8 has no Milvus equivalent; leave it out and use Flat, IVF<n>,Flat"),
        ("IVF16,PQ4", None, "Milvus Lite cannot build IVF_PQ; use Flat, IVF<n>,Flat or HNSW<M>"),
        ("IVF16,PQ5", None, "PQ5 must divide the feature size 16"),
        ("GPU_CAGRA", None, "needs a Milvus server with GPUs"),
        ("GPU_IVF_PQ", None, "needs a Milvus server with GPUs"),
        ("HNSW1", None, "outside Milvus's range 2..2048"),
    ],
)
def test_unmappable_factories_are_refused_before_anything_is_made(tmp_path, factory, pca, message):
    where = address(tmp_path)
    with pytest.raises(ConfigError) as e:
        make(where, factory=factory, pca=pca)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert not MilvusStore.exists(where)


def test_gpu_and_pq_factories_map_for_a_server():
    spec = IndexSpec(dim=4096, factory="IVF1024,PQ64")
    assert ms.milvus_index(spec, "server") == ("IVF_PQ", {"nlist": 1024, "m": 64, "nbits": 8})
    assert ms.milvus_index(IndexSpec(dim=4096, factory="GPU_IVF_PQ"), "server") == (
        "GPU_IVF_PQ",
        {"nlist": 1024, "m": 64},
    )
    assert ms.milvus_index(IndexSpec(dim=96, factory="GPU_IVF_PQ"), "server")[1]["m"] == 48
    assert ms.milvus_index(IndexSpec(dim=16, factory="GPU_CAGRA"), "server") == ("GPU_CAGRA", {})
    assert ms.milvus_index(IndexSpec(dim=16, factory="HNSW32"), "server") == ("HNSW", {"M": 32, "efConstruction": 40})


def test_an_unreachable_server_is_named_in_one_line():
    with pytest.raises(ConfigError) as e:
        MilvusStore.exists("milvus://127.0.0.1:1/images")
    assert "milvus://127.0.0.1:1/images: cannot reach Milvus at http://127.0.0.1:1" in str(e.value)
    assert "start Milvus there, or check $MILVUS_TOKEN" in str(e.value) and "\n" not in str(e.value)


def test_the_module_imports_without_pymilvus_and_says_what_to_install(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.modules["pymilvus"] = None  # as if not installed
        from alexsuite.retrieval.index import IndexSpec
        from alexsuite.retrieval.milvus_store import MilvusStore
        try:
            MilvusStore.create({address(tmp_path)!r}, {{}}, "fc7", {{}}, IndexSpec(dim=4))
        except Exception as e:
            print(type(e).__name__, e)
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.startswith("MilvusMissing --index milvus-lite:")
    assert out.rstrip().endswith(": needs pymilvus and milvus-lite: pip install 'alexsuite[milvus]'")
    assert issubclass(ms.MilvusMissing, ConfigError)


# ---- one writer, rebuilds ---------------------------------------------------------------------------
def test_writer_lock_admits_one_writer(tmp_path):
    where = address(tmp_path)
    busy = pytest.raises(IndexBusyError, match=rf"pid {os.getpid()}\) is writing this index; wait for it")
    with MilvusStore.writer_lock(where):
        with busy, MilvusStore.writer_lock(where, wait=0):
            pass
        with MilvusStore.writer_lock(MilvusStore.staging(where)):  # a rebuild locks its staging collection too
            pass
    with MilvusStore.writer_lock(where, wait=0):
        pass


def test_server_lease_admits_one_writer_and_outlives_a_dead_one(tmp_path):
    """The server's lease, exercised on Milvus Lite (same client calls)."""
    with ms._Connection(address(tmp_path)) as conn:
        busy = pytest.raises(IndexBusyError, match=rf"pid {os.getpid()} on .*\) is writing this index")
        with ms._server_lease(conn, wait=0), busy, ms._server_lease(conn, wait=0):
            pass
        assert ms._get(conn.client, ms.LEASES, conn.name) is None  # given back
        dead = {"owner": "gone", "pid": 1, "host": "elsewhere", "until": 0.0}  # a holder that died long ago
        ms._put(conn.client, ms.LEASES, conn.name, dead)
        with ms._server_lease(conn, wait=0):
            assert ms._get(conn.client, ms.LEASES, conn.name)["pid"] == os.getpid()


def test_staging_is_swapped_in(tmp_path):
    rng = np.random.default_rng(6)
    where = address(tmp_path)
    staging = MilvusStore.staging(where)
    assert staging == where + "__rebuild"
    old = make(where)
    fill(old, rng.standard_normal((3, 16)).astype(np.float32), "/old")
    old.close()
    new = make(staging, factory="HNSW8", metric="cosine")
    vectors = rng.standard_normal((5, 16)).astype(np.float32)
    fill(new, vectors, "/new")
    new.close()
    MilvusStore.swap_in(staging, where)
    assert not MilvusStore.exists(staging)
    store = MilvusStore.open_read(where)
    try:
        assert store.spec.factory == "HNSW8" and store.count() == 5 and store.next_id() == 5
        assert ms._get(store._client, ms._meta(store.name), "swapping") is None  # the mark is cleared
        assert set(store.rows_under("/new")) == {f"/new/{i}.jpg" for i in range(5)} and not store.rows_under("/old")
        _, found = store.search(vectors, 1)
        assert list(found[:, 0]) == list(range(5))
    finally:
        store.close()


def test_a_swap_cut_short_is_finished_by_the_next_open(tmp_path):
    where = address(tmp_path)
    staging = MilvusStore.staging(where)
    make(where).close()
    new = make(staging, factory="HNSW8")
    fill(new, np.random.default_rng(7).standard_normal((4, 16)).astype(np.float32), "/new")
    new.close()
    with ms._Connection(where) as conn:  # as swap_in, killed after dropping the old manifest
        ms._put(conn.client, ms._meta("images__rebuild"), "swapping", True)
        conn.client.drop_collection(ms._meta("images"))
    store = MilvusStore.open_read(where)
    try:
        assert store.spec.factory == "HNSW8" and store.count() == 4
    finally:
        store.close()
    assert not MilvusStore.exists(staging)

"""Re-ranking: alpha-weighted query expansion at query time and database-side augmentation at
index time, on small generated data and the shared test photos, through the library, the
command line, the Python API and the server."""

import json
import shutil
import sqlite3

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fastapi.testclient import TestClient

import alexsuite
from alexsuite.cli.main import main
from alexsuite.errors import ConfigError, DataError
from alexsuite.models.checkpoint import load_model
from alexsuite.retrieval import index as faiss_index
from alexsuite.retrieval import rerank
from alexsuite.retrieval.evaluate import evaluate_retrieval
from alexsuite.retrieval.indexer import IndexOptions, update_index
from alexsuite.retrieval.store import RAW_FILE, IndexStore

CPU = torch.device("cpu")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.mark.parametrize(
    "text,message",
    [
        ("foo", "unknown method 'foo'"),
        ("aqe:n=0", "n must be a whole number from 1 to 1000"),
        ("aqe:n=2.5", "n must be a whole number"),
        ("aqe:alpha=-1", "alpha must be a number 0 or more"),
        ("aqe:alpha=nan", "alpha must be a number 0 or more"),
        ("aqe:k=3", "'k=3' is not n=N or alpha=A"),
        ("aqe:n=3,n=4", "n is given twice"),
        ("none:n=3", "none takes no settings"),
    ],
)
def test_bad_rerank_strings_say_the_fix(text, message):
    with pytest.raises(ConfigError, match=message) as e:
        rerank.parse_rerank(text)
    assert "aqe:n=5,alpha=3" in str(e.value) and "\n" not in str(e.value)


def test_good_strings_and_dba_parse():
    assert rerank.parse_rerank("none") == rerank.Rerank() and not rerank.parse_rerank(None).on
    assert rerank.parse_rerank("AQE") == rerank.Rerank("aqe", 5, 3.0)
    assert str(rerank.parse_rerank("aqe:alpha=0,n=10")) == "aqe:n=10,alpha=0"
    assert rerank.parse_dba("none") is None and rerank.parse_dba("n=4") == rerank.Dba(4, 3.0)
    with pytest.raises(ConfigError, match="--dba 'm=4': 'm=4' is not n=N"):
        rerank.parse_dba("m=4")
    with pytest.raises(ConfigError, match="n must be"):
        rerank.Rerank("aqe", n=0)


def _fan(degrees) -> np.ndarray:
    a = np.radians(np.asarray(degrees, np.float64))
    return np.stack([np.cos(a), np.sin(a)], 1).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_query_expansion_fixes_a_ranking(metric):
    # the query at 0 degrees; relevant images at 10, 14 and 27, a distractor at -15: plain search
    # ranks the distractor third; expanded with the top two, the query turns to about 8 degrees,
    # nearer 27 (19 degrees) than -15 (23 degrees)
    db, labels = _fan([10, 14, -15, 27]), np.array([0, 0, 1, 0])
    q, q_labels = _fan([0]), np.array([0])
    spec = faiss_index.IndexSpec(2, metric=metric)
    index = faiss_index.create(spec)
    faiss_index.add(index, db, np.arange(4), spec)
    assert faiss_index.search(index, q, 4, spec)[1].tolist() == [[0, 1, 2, 3]]
    expanded = rerank.expand_arrays(index, db, q, rerank.Rerank("aqe", 2, 3.0), metric)
    assert faiss_index.search(index, expanded, 4, spec)[1].tolist() == [[0, 1, 3, 2]]
    plain = evaluate_retrieval(db, labels, q, q_labels, spec, ks=(3,))
    aqe = evaluate_retrieval(db, labels, q, q_labels, spec, ks=(3,), rerank="aqe:n=2,alpha=3")
    assert plain["mAP"] == pytest.approx((1 + 1 + 3 / 4) / 3) and plain["precision@3"] == pytest.approx(2 / 3)
    assert aqe["mAP"] == pytest.approx(1.0) and aqe["precision@3"] == 1.0 and aqe["rerank"] == "aqe:n=2,alpha=3"


def _dba_by_hand(x: np.ndarray, n: int, alpha: float, metric: str) -> np.ndarray:
    """Radenović et al.'s formula, written out: x_i + sum_j max(cos(x_i, x_j), 0)^alpha x_j over
    the n nearest others, normalised (cosine) or divided by the weights' sum (l2)."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = 1 - u @ u.T if metric == "cosine" else ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    out = []
    for i in range(len(x)):
        near = np.argsort(d[i], kind="stable")[:n]
        w = np.clip(u[near] @ u[i], 0, None) ** alpha
        if metric == "cosine":
            v = u[i] + w @ u[near]
            out.append(v / np.linalg.norm(v))
        else:
            out.append((x[i] + w @ x[near]) / (1 + w.sum()))
    return np.array(out, np.float32)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_dba_vectors_are_the_formula_and_updates_match_a_rebuild(metric):
    x = np.random.default_rng(0).normal(1, 1, (60, 8)).astype(np.float32)
    dba = rerank.Dba(4, 2.0)
    assert np.allclose(rerank.augment_arrays(x, dba, metric), _dba_by_hand(x, 4, 2.0, metric), atol=1e-5)
    stored = rerank.unit(x) if metric == "cosine" else x
    state = rerank.Augmented(rerank.raw_index(8, metric), {}, dba, np.empty(0, np.int64))
    held = {}
    for add, remove in ((range(0, 30), []), (range(30, 50), [3, 7, 11]), (range(50, 60), [20, 40])):
        add = np.array(add)
        ids, vectors, _ = state.update(stored[add], add, remove)
        held = {i: v for i, v in held.items() if i not in remove} | dict(zip(ids.tolist(), vectors))
    keep = np.array(sorted(held))
    assert np.allclose([held[i] for i in keep], _dba_by_hand(x[keep], 4, 2.0, metric), atol=1e-5)


# ---- indexes on disk -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_model(trained_run)


def _vectors_by_path(index_dir) -> dict:
    store = IndexStore.open_read(index_dir)
    rows = store.rows_by_id(faiss_index.stored_ids(store.index))
    ids = np.array(sorted(rows))
    vectors = faiss_index.reconstruct(store.index, ids)
    store.close()
    return {rows[int(i)].path: v for i, v in zip(ids, vectors)}


def _update(loaded, photos, index_dir, **kw):
    return update_index(index_dir, loaded, photos, IndexOptions(workers=0, batch_size=16, **kw), CPU)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_an_updated_dba_index_equals_one_built_from_scratch(loaded, trained_run, val_photos, tmp_path, metric):
    photos, later = tmp_path / "photos", tmp_path / "later"
    shutil.copytree(val_photos, photos)
    later.mkdir()
    for p in sorted(photos.rglob("*_00[67].png")):  # 6 images arrive later
        p.rename(later / f"{p.parent.name}+{p.name}")
    index = tmp_path / "idx"
    made = run(
        "index", photos, "--model", trained_run, "--index", index, "--metric", metric,
        "--dba", "n=3,alpha=3", "--workers", "0", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["added"] == 18 and (index / RAW_FILE).is_file()
    for p in later.iterdir():
        folder, name = p.name.split("+")
        p.rename(photos / folder / name)
    for p in sorted(photos.rglob("*_001.png")):
        p.unlink()  # 3 images go
    report = _update(loaded, photos, index, prune=True)
    assert (report.added, report.removed, report.total) == (6, 3, 21) and 0 < report.augmented < 18
    fresh = _update(loaded, photos, tmp_path / "fresh", metric=metric, dba="n=3,alpha=3")
    assert fresh.total == 21
    updated, rebuilt = _vectors_by_path(index), _vectors_by_path(tmp_path / "fresh")
    assert updated.keys() == rebuilt.keys()
    assert all(np.allclose(updated[p], rebuilt[p], atol=1e-4) for p in updated)
    assert json.loads((index / "manifest.json").read_text())["dba"] == {"n": 3, "alpha": 3.0}

    with sqlite3.connect(index / "meta.sqlite") as db:  # a writer killed mid-commit leaves a radius missing
        db.execute("DELETE FROM dba WHERE id = (SELECT MIN(id) FROM dba)")
    healed = _update(loaded, photos, index)
    assert healed.augmented == 21 and healed.added == 0
    assert all(np.allclose(v, rebuilt[p], atol=1e-4) for p, v in _vectors_by_path(index).items())


def test_dba_settings_are_kept_and_read_strictly(loaded, val_photos, tmp_path):
    index = tmp_path / "idx"
    _update(loaded, val_photos, index, dba="n=2")
    for asked in ("n=4", "none"):
        with pytest.raises(ConfigError, match="--dba n=2,alpha=3 .*--rebuild"):
            _update(loaded, val_photos, index, dba=asked)
    assert _update(loaded, val_photos, index, dba="n=2,alpha=3").unchanged == 24
    good = (index / RAW_FILE).read_bytes()
    (index / RAW_FILE).write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="raw.faiss: not the raw vectors of this index; rebuild"):
        _update(loaded, val_photos, index)
    (index / RAW_FILE).write_bytes(good)
    manifest = json.loads((index / "manifest.json").read_text())
    (index / "manifest.json").write_text(json.dumps({**manifest, "dba": {"n": 2, "alpha": 3, "beta": 1}}))
    with pytest.raises(ConfigError, match="dba: unknown setting.*beta"):
        IndexStore.open_read(index)
    del manifest["dba"]  # an index written before --dba existed
    (index / "manifest.json").write_text(json.dumps(manifest))
    store = IndexStore.open_read(index)
    assert store.dba is None and store.count() == 24
    store.close()
    with pytest.raises(ConfigError, match="cannot replace a stored vector"):
        _update(loaded, val_photos, tmp_path / "hnsw", factory="HNSW32", dba="n=2")


# ---- front doors ------------------------------------------------------------------------------
def _expected_aqe(val_index, query_id: int, n: int, alpha: float, k: int) -> list[int]:
    """aQE on an l2 index, written out from the stored vectors: the query's own image left out."""
    store = IndexStore.open_read(val_index)
    ids = faiss_index.stored_ids(store.index)
    x = faiss_index.reconstruct(store.index, ids)
    store.close()
    q, others = x[ids == query_id][0], ids != query_id
    ids, x = ids[others], x[others]
    near = np.argsort(((x - q) ** 2).sum(1), kind="stable")[:n]
    w = np.clip(rerank.unit(x[near]) @ rerank.unit(q[None])[0], 0, None) ** alpha
    expanded = (q + w @ x[near]) / (1 + w.sum())
    return ids[np.argsort(((x - expanded) ** 2).sum(1), kind="stable")[:k]].tolist()


def test_search_rerank_through_the_cli_api_and_server(val_index):
    from alexsuite.serve.app import create_app
    from alexsuite.serve.server import Service
    from alexsuite.serve.settings import ServeSettings

    result = run("search", "--id", 5, "--index", val_index, "-k", 6, "--rerank", "aqe:n=3,alpha=3", "--json")
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(text) for text in result.stdout.splitlines()]
    assert [h["rank"] for h in line["results"]] == [1, 2, 3, 4, 5, 6]
    assert [h["id"] for h in line["results"]] == _expected_aqe(val_index, 5, 3, 3.0, 6)
    with alexsuite.Index(val_index, device="cpu") as index:
        (api,) = index.search(ids=[5], k=6, rerank="aqe:n=3,alpha=3")
        assert api.to_dict() == line
    bad = run("search", "--id", 5, "--index", val_index, "--rerank", "aqe:n=x")
    assert bad.exit_code == 2 and "--rerank 'aqe:n=x': n must be" in bad.output

    service = Service(ServeSettings(index=str(val_index), device="cpu", max_k=50)).start()
    try:
        with TestClient(create_app(service, service.settings), base_url="http://localhost") as client:
            got = client.get("/search", params={"id": 5, "k": 6, "rerank": "aqe:n=3,alpha=3"})
            assert got.status_code == 200 and got.json()["results"] == line["results"]
            assert client.get("/search", params={"id": 5, "rerank": "aqe:n=x"}).status_code == 400
            assert "at most 50" in client.get("/search", params={"id": 5, "rerank": "aqe:n=60"}).json()["error"]
    finally:
        service.stop()


def test_eval_retrieval_with_rerank_and_dba(trained_run, shapes_dir):
    result = run(
        "eval-retrieval", shapes_dir, "--model", trained_run, "--workers", "0", "-k", "5", "--metric", "cosine",
        "--rerank", "aqe:n=3,alpha=3", "--dba", "n=3", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert (r["rerank"], r["dba"], r["queries"]) == ("aqe:n=3,alpha=3", "n=3,alpha=3", 24)
    assert 0 < r["mAP"] <= 1 and r["queries_per_second"] > 0

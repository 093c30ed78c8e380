"""The commands and the Python API on a Milvus collection (a real Milvus Lite): the same results as
a FAISS index, incremental updates with stable ids, and kill -9 at any moment of a commit."""

import json
import shutil
import signal
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
from PIL import Image

import alexsuite
from alexsuite.errors import CheckpointError, ConfigError
from alexsuite.models.checkpoint import load_model, save_checkpoint
from tests.conftest import serving

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


@pytest.fixture()
def photos(val_photos, tmp_path):
    root = tmp_path / "photos"
    shutil.copytree(val_photos, root)
    return root


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "alexsuite.cli", *args], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_index_and_search_on_milvus_lite_match_faiss(trained_run, val_index, photos, tmp_path):
    address = f"milvus-lite:{tmp_path / 'm.db'}/shapes"
    common = ["--model", str(trained_run), "--workers", "0", "--device", "cpu"]
    report = json.loads(_cli("index", str(photos), "--index", address, "--json", *common).stdout)
    assert (report["added"], report["total"]) == (24, 24)
    queries = sorted(photos.rglob("*.png"))[:4]
    faiss_index = tmp_path / "faiss"
    _cli("index", str(photos), "--index", str(faiss_index), "--json", *common)
    found = {}
    for where in (address, str(faiss_index)):
        out = _cli("search", *map(str, queries), "--index", where, "-k", "5", "--json", "--device", "cpu").stdout
        found[where] = [json.loads(line) for line in out.splitlines()]
    for m, f in zip(found[address], found[str(faiss_index)]):
        assert m["query"] not in [h["path"] for h in m["results"]]  # a query is left out of its own results
        assert [h["path"] for h in m["results"]] == [h["path"] for h in f["results"]]
        np.testing.assert_allclose([h["distance"] for h in m["results"]], [h["distance"] for h in f["results"]], 1e-3)


def test_updates_keep_ids_and_refuse_another_model(trained_run, photos, tmp_path):
    address = f"milvus-lite:{tmp_path / 'm.db'}/shapes"
    index = alexsuite.Index(address, model=trained_run, device="cpu")
    index.add(photos, workers=0, factory="HNSW32", metric="cosine")
    before = {r.path: r.id for r in index._open().all_rows().values()}
    changed, gone = sorted((photos / "circle").glob("*.png"))[:2]
    Image.new("RGB", (40, 40), (250, 10, 10)).save(changed)
    gone.unlink()
    Image.new("RGB", (40, 40), (10, 250, 10)).save(photos / "square" / "new.png")
    (report,) = index.add(photos, prune=True, workers=0)
    assert (report.added, report.updated, report.removed, report.total) == (1, 1, 1, 24)
    after = {r.path: r.id for r in index._open().all_rows().values()}
    assert after[str(changed)] == before[str(changed)]  # a changed file keeps its id
    assert str(gone) not in after and after[str(photos / "square" / "new.png")] > max(before.values())
    hits = index.search(changed, k=3)[0].results
    assert len(hits) == 3 and str(changed) not in [h.path for h in hits]
    assert index.duplicates(threshold=0.0) == []
    index.close()
    with pytest.raises(ConfigError, match="--factory HNSW32"):
        alexsuite.Index(address, model=trained_run, device="cpu").add(photos, factory="Flat", workers=0)
    with pytest.raises(ConfigError, match="FAISS"):
        alexsuite.Index(f"milvus-lite:{tmp_path / 'm.db'}/other", model=trained_run, device="cpu").add(
            photos, on_disk=True, factory="IVF4,Flat", workers=0
        )
    other, ckpt = tmp_path / "other.pt", dict(load_model(trained_run).checkpoint)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(other, {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(CheckpointError, match="fingerprint"):
        alexsuite.Index(address, model=other, device="cpu").add(photos, workers=0)


def test_an_index_whose_rows_were_all_pruned_keeps_its_ids(trained_run, photos, tmp_path):
    address = f"milvus-lite:{tmp_path / 'm.db'}/shapes"
    index = alexsuite.Index(address, model=trained_run, device="cpu")
    index.add(photos, workers=0)
    top = max(index._open().all_rows())
    for folder in list(photos.iterdir()):
        shutil.rmtree(folder)
    (report,) = index.add(photos, prune=True, workers=0)
    assert (report.removed, report.total) == (24, 0)
    (photos / "circle").mkdir()
    Image.new("RGB", (40, 40), (0, 200, 0)).save(photos / "circle" / "green.png")
    (report,) = index.add(photos, workers=0)
    assert report.added == 1 and [r.id for r in index._open().all_rows().values()] == [top + 1]
    index.close()


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import torch
    from alexsuite.models.checkpoint import load_model
    from alexsuite.retrieval import milvus_store
    from alexsuite.retrieval.indexer import IndexOptions, update_index
    where, calls = sys.argv[4], {"n": 0}
    original = getattr(milvus_store.MilvusStore, where)
    def die_on_second(self, *args):
        calls["n"] += 1
        if calls["n"] == 2:  # the second commit: the first one landed whole
            if where == "_write":  # half of the entities written, then killed
                original(self, args[0][: len(args[0]) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args)
    setattr(milvus_store.MilvusStore, where, die_on_second)
    update_index(sys.argv[1], load_model(sys.argv[2]), Path(sys.argv[3]),
                 IndexOptions(workers=0, batch_size=8, commit_seconds=0), torch.device("cpu"))
""")


@pytest.mark.slow
@pytest.mark.parametrize("where", ["reserve_ids", "_write", "flush"])
def test_kill_9_at_any_step_of_a_commit_leaves_no_duplicate_and_no_gap(trained_run, photos, tmp_path, where):
    address = f"milvus-lite:{tmp_path / 'm.db'}/shapes"
    proc = subprocess.run([sys.executable, "-c", KILLER, address, str(trained_run), str(photos), where])
    assert proc.returncode == -signal.SIGKILL
    index = alexsuite.Index(address, model=trained_run, device="cpu")
    (report,) = index.add(photos, workers=0)
    rows = index._open().all_rows().values()
    paths = sorted(str(p) for p in photos.rglob("*.png"))
    assert report.total == 24 and sorted(r.path for r in rows) == paths  # each file once
    assert len({r.id for r in rows}) == 24 and report.added + report.unchanged == 24
    index.close()


def test_bad_addresses_are_one_line_errors(trained_run, photos, tmp_path):
    for bad in ("milvus-lite:nowhere", "milvus-lite:x.txt/c", "milvus://127.0.0.1:9/c"):
        proc = _cli("index", str(photos), "--index", bad, "--model", str(trained_run), check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) <= 2
        fix = "start Milvus there" if bad.startswith("milvus://") else "milvus-lite:PATH.db/COLLECTION"
        assert fix in proc.stderr, proc.stderr
    missing = _cli("search", str(photos / "circle"), "--index", f"milvus-lite:{tmp_path / 'x.db'}/none", check=False)
    assert missing.returncode != 0 and "alexsuite index IMAGES --index" in missing.stderr


def test_eval_retrieval_in_milvus_lite_matches_faiss(trained_run, shapes_dir, tmp_path):
    common = ["eval-retrieval", str(shapes_dir), "--model", str(trained_run), "--workers", "0", "--json"]
    faiss_result = json.loads(_cli(*common).stdout)
    milvus = json.loads(_cli(*common, "--index", f"milvus-lite:{tmp_path / 'e.db'}/shapes").stdout)
    assert milvus["index"].endswith("/shapes") and milvus["database"] == faiss_result["database"] == 72
    assert milvus["mAP"] == pytest.approx(faiss_result["mAP"], abs=1e-4)
    assert milvus["precision@10"] == pytest.approx(faiss_result["precision@10"], abs=1e-4)


def test_a_real_server_on_a_milvus_lite_index(trained_run, photos, tmp_path):
    address = f"milvus-lite:{tmp_path / 'm.db'}/shapes"
    _cli("index", str(photos), "--index", address, "--model", str(trained_run), "--workers", "0", "--device", "cpu")
    query = sorted(photos.rglob("*.png"))[0]
    (cli,) = [json.loads(line) for line in _cli("search", str(query), "--index", address, "--json").stdout.splitlines()]
    with serving("--index", address) as url:
        assert httpx.get(url + "/stats").json()["images"] == 24
        with open(query, "rb") as f:
            body = httpx.post(url + "/search?k=10", files={"file": ("q.png", f.read(), "image/png")}).json()
        assert body["results"][0]["path"] == str(query)  # an upload is no row: the file itself comes first
        assert [h["path"] for h in body["results"][1:]] == [h["path"] for h in cli["results"]][:9]
        own = body["results"][0]["id"]
        assert httpx.get(f"{url}/images/{own}").content == query.read_bytes()
        assert httpx.get(url + "/duplicates?threshold=0").json() == {"groups": [], "total": 0}

"""Indexes on disk: incremental updates, stable ids, model checks, crash safety, one writer."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from alexsuite.errors import CheckpointError, ConfigError, DataError
from alexsuite.evaluation.retrieval import average_precision
from alexsuite.models.checkpoint import load_model, save_checkpoint
from alexsuite.retrieval import index as faiss_index
from alexsuite.retrieval.evaluate import evaluate_retrieval
from alexsuite.retrieval.indexer import IndexOptions, update_index
from alexsuite.retrieval.search import Searcher
from alexsuite.retrieval.store import IndexBusyError, IndexStore, writer_lock

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_model(trained_run)


@pytest.fixture()
def photos(shapes_dir, tmp_path):
    """A private copy of the shapes (72 + 24 PNGs in class folders) that tests may change."""
    root = tmp_path / "photos"
    shutil.copytree(shapes_dir / "train", root)
    return root


def build(loaded, photos, index_dir, **kw):
    return update_index(index_dir, loaded, photos, IndexOptions(workers=0, batch_size=16, **kw), CPU)


def test_average_precision_by_hand():
    db_labels = np.array([0, 1, 0, 1])
    ranked = np.array([[0, 1, 2, 3], [1, -1, -1, -1]])  # the 2nd query's index returned one image
    ap, precision = average_precision(ranked, db_labels, np.array([0, 1]), ks=(2,))
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert ap[1] == pytest.approx((1 / 1) / 2)  # the relevant image never returned counts as missed
    assert list(precision[2]) == [0.5, 0.5]


def test_evaluate_retrieval_separable_clusters_is_perfect():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 10
    labels = np.repeat(np.arange(3), 30)
    db = (centres[labels] + rng.normal(size=(90, 16))).astype(np.float32)
    q = (centres[labels[:9]] + rng.normal(size=(9, 16))).astype(np.float32)
    for metric in ("l2", "cosine"):
        r = evaluate_retrieval(db, labels, q, labels[:9], faiss_index.IndexSpec(16, metric=metric), ks=(10,))
        assert r["mAP"] == pytest.approx(1.0) and r["precision@10"] == 1.0


def test_bad_factory_and_too_few_training_vectors_are_clear_errors():
    with pytest.raises(ConfigError, match="FAISS cannot build"):
        faiss_index.create(faiss_index.IndexSpec(64, factory="NoSuchIndex"))
    spec = faiss_index.IndexSpec(64, factory="IVF256,Flat")
    with pytest.raises(ConfigError, match="Flat or HNSW32"):
        faiss_index.train(faiss_index.create(spec), np.zeros((20, 64), np.float32), spec)


def test_build_then_update_only_embeds_what_changed(loaded, photos, tmp_path):
    index_dir = tmp_path / "idx"
    first = build(loaded, photos, index_dir)
    assert (first.added, first.total, first.failed) == (72, 72, 0)
    again = build(loaded, photos, index_dir)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 72)

    changed, touched, gone = (
        photos / "circle" / "circle_000.png",
        photos / "square" / "square_000.png",
        photos / "stripes" / "stripes_000.png",
    )
    store = IndexStore.open_read(index_dir)
    old = {p: store.row_by_path(p) for p in (changed, touched, gone)}
    store.close()
    Image.new("RGB", (40, 40), (250, 0, 0)).save(changed)
    os.utime(touched, ns=(1, 10**18))  # new mtime, same content
    gone.unlink()
    (photos / "new").mkdir()
    Image.new("RGB", (40, 40), (0, 0, 250)).save(photos / "new" / "blue.png")
    (photos / "notes.txt").write_text("not an image")

    report = build(loaded, photos, index_dir)
    assert (report.added, report.updated, report.touched, report.missing, report.removed) == (1, 1, 1, 1, 0)
    assert report.non_images == 1 and report.total == 73
    report = build(loaded, photos, index_dir, prune=True)
    assert (report.added, report.removed, report.total) == (0, 1, 72)

    store = IndexStore.open_read(index_dir)
    assert store.row_by_path(gone) is None
    assert store.row_by_path(touched).id == old[touched].id  # not embedded again
    assert store.row_by_path(changed).id != old[changed].id  # new vector, new id
    assert store.row_by_path(photos / "new" / "blue.png").label == "new"
    assert store.index.ntotal == store.count() == 72  # Flat removes for real
    assert store.manifest["layer"] == "fc7" and store.manifest["model"]["fingerprint"] == loaded.fingerprint
    store.close()


def test_search_finds_same_class_and_leaves_out_the_query(loaded, photos, tmp_path):
    index_dir = tmp_path / "idx"
    build(loaded, photos, index_dir)
    store = IndexStore.open_read(index_dir)
    queries = sorted(photos.rglob("*.png"))
    results = Searcher(store, loaded, CPU).search_files(queries, k=5)
    for query, result in zip(queries, results):
        assert len(result.results) == 5 and result.error is None
        assert str(query) not in [h.path for h in result.results]
        assert [h.rank for h in result.results] == [1, 2, 3, 4, 5]
        assert all(a.distance <= b.distance for a, b in zip(result.results, result.results[1:]))
    # Leave-one-out nearest neighbour of a 0.75-accuracy net: well above chance (1/3).
    nn_same_class = np.mean([r.results[0].label == q.parent.name for q, r in zip(queries, results)])
    print("1-NN same class", nn_same_class)
    assert nn_same_class >= 0.6
    store.close()


@pytest.mark.parametrize(
    "factory,metric",
    [("HNSW16", "cosine"), ("IVF4,Flat", "cosine"), ("PCA64,IVF2,Flat", "l2"), ("IVF2,PQ64x4fs,RFlat", "l2")],
)
def test_other_factories_and_removal_where_faiss_cannot_delete(loaded, photos, tmp_path, factory, metric):
    index_dir = tmp_path / "idx"
    build(loaded, photos, index_dir, factory=factory, metric=metric)
    (photos / "circle" / "circle_001.png").unlink()
    build(loaded, photos, index_dir, prune=True)  # settings left out: as the index was built
    store = IndexStore.open_read(index_dir)
    assert store.count() == 71
    # HNSW and refine stages cannot remove: the vector stays, without a row, and is skipped.
    assert store.dead_vectors() == (1 if factory.startswith("HNSW") or "RFlat" in factory else 0)
    searcher = Searcher(store, loaded, CPU)
    hits = searcher.search_files([photos / "circle" / "circle_002.png"], k=71)[0].results
    assert len(hits) == 70 and all("circle_001" not in h.path for h in hits)
    # Ids still point at the right files after the removal: every image finds itself first.
    queries = sorted(photos.rglob("*.png"))
    for query, result in zip(queries, searcher.search_files(queries, k=1, exclude_self=False)):
        assert result.results[0].path == str(query) and result.results[0].distance < 1e-3
    store.close()


def test_index_refuses_another_model_and_other_settings(loaded, photos, tmp_path, trained_run):
    index_dir = tmp_path / "idx"
    build(loaded, photos, index_dir)
    other = tmp_path / "other.pt"
    ckpt = dict(loaded.checkpoint)
    ckpt["model"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(other, {k: v for k, v in ckpt.items() if k != "format"})
    with pytest.raises(CheckpointError, match="fingerprint"):
        build(load_model(other), photos, index_dir)
    store = IndexStore.open_read(index_dir)
    with pytest.raises(CheckpointError, match="not .*other.pt"):
        Searcher(store, load_model(other), CPU)
    store.close()
    with pytest.raises(ConfigError, match="--rebuild"):
        build(loaded, photos, index_dir, layer="fc6")
    assert build(loaded, photos, index_dir, layer="fc6", rebuild=True).added == 72


def test_second_writer_is_refused_or_waits(loaded, photos, tmp_path):
    index_dir = tmp_path / "idx"
    with writer_lock(index_dir):
        with pytest.raises(IndexBusyError, match=f"pid {os.getpid()}"):
            build(loaded, photos, index_dir)
        with pytest.raises(IndexBusyError):
            build(loaded, photos, index_dir, wait=0.3)
    assert build(loaded, photos, index_dir).added == 72  # the lock is gone with its holder


KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    from pathlib import Path
    from alexsuite.retrieval import store
    from alexsuite.retrieval.indexer import IndexOptions, update_index
    from alexsuite.models.checkpoint import load_model
    saves = []
    real_save = store.IndexStore.save_index
    def save_then_die(self):
        real_save(self)
        saves.append(1)
        if len(saves) == 2:  # the worst moment: index.faiss replaced, SQLite not yet committed
            os.kill(os.getpid(), signal.SIGKILL)
    store.IndexStore.save_index = save_then_die
    update_index(Path(sys.argv[1]), load_model(sys.argv[2]), Path(sys.argv[3]),
                 IndexOptions(workers=0, batch_size=8, commit_seconds=0), torch.device("cpu"))
""")


@pytest.mark.slow
def test_kill_9_between_the_two_commits_loses_nothing(loaded, photos, tmp_path, trained_run):
    index_dir = tmp_path / "idx"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(index_dir), str(trained_run), str(photos)])
    assert proc.returncode == -signal.SIGKILL
    store = IndexStore.open_read(index_dir)
    assert store.count() == 8 and store.index.ntotal == 16 and store.dead_vectors() == 8
    hits = Searcher(store, loaded, CPU).search_files([photos / "circle" / "circle_000.png"], k=50)[0].results
    assert len(hits) == 7 and len({h.id for h in hits}) == 7  # only committed rows are visible
    store.close()
    report = build(loaded, photos, index_dir)
    assert (report.added, report.total) == (64, 72)
    store = IndexStore.open_read(index_dir)
    assert store.index.ntotal == 72 and store.dead_vectors() == 0
    assert sorted(store.rows_by_id(range(200))) == sorted(int(i) for i in faiss_index.stored_ids(store.index))
    store.close()


def test_missing_or_corrupt_index_and_empty_folder_are_clear_errors(loaded, photos, tmp_path):
    with pytest.raises(DataError, match="no such index"):
        IndexStore.open_read(tmp_path / "nothing")
    index_dir = tmp_path / "idx"
    build(loaded, photos, index_dir)
    (index_dir / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt FAISS index.*--rebuild"):
        IndexStore.open_read(index_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        build(loaded, tmp_path / "empty", tmp_path / "idx2")


@pytest.mark.slow
def test_torchrun_two_processes_build_the_same_index(loaded, photos, tmp_path, trained_run):
    common = [
        "index",
        str(photos),
        "--model",
        str(trained_run),
        "--workers",
        "0",
        "--batch-size",
        "16",
        "--device",
        "cpu",
        "--json",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "alexsuite.cli", *common, "--index", str(tmp_path / "one")],
        check=True,
        env=env,
        capture_output=True,
    )
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "alexsuite.cli",
            *common,
            "--index",
            str(tmp_path / "two"),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    one, two = IndexStore.open_read(tmp_path / "one"), IndexStore.open_read(tmp_path / "two")
    assert one.count() == two.count() == two.index.ntotal == 72
    for path in sorted(photos.rglob("*.png")):
        a, b = one.row_by_path(path), two.row_by_path(path)
        assert (a.sha256, a.label) == (b.sha256, b.label)
        np.testing.assert_allclose(one.index.reconstruct(a.id), two.index.reconstruct(b.id), rtol=1e-4, atol=1e-5)
    one.close()
    two.close()


def test_ids_are_never_reused_and_odd_names_are_skipped(loaded, photos, tmp_path):
    index_dir = tmp_path / "idx"
    build(loaded, photos, index_dir)
    store = IndexStore.open_read(index_dir)
    newest = max(store.rows_under(photos.resolve()).values(), key=lambda r: r.id)
    store.close()
    os.unlink(newest.path)
    build(loaded, photos, index_dir, prune=True)
    Image.new("RGB", (40, 40), (0, 200, 0)).save(photos / "circle" / "green.png")
    with open(os.fsencode(photos / "circle") + b"/bad-\xff-name.png", "wb") as f:  # not UTF-8
        Image.new("RGB", (40, 40)).save(f, "PNG")
    warnings = []
    report = update_index(index_dir, loaded, photos, IndexOptions(workers=0), CPU, warn=warnings.append)
    assert report.added == 1 and any("UTF-8" in w for w in warnings)
    store = IndexStore.open_read(index_dir)
    assert store.row_by_path(photos.resolve() / "circle" / "green.png").id == newest.id + 1
    store.close()


def test_an_index_whose_rows_were_all_pruned_keeps_its_settings_and_ids(loaded, photos, tmp_path):
    index_dir = tmp_path / "idx"
    build(loaded, photos, index_dir, factory="IVF4,Flat")
    store = IndexStore.open_read(index_dir)
    top = max(store.row_ids())
    store.close()
    for folder in list(photos.iterdir()):
        shutil.rmtree(folder)
    report = build(loaded, photos, index_dir, prune=True)
    assert (report.removed, report.total) == (72, 0)
    (photos / "circle").mkdir()
    Image.new("RGB", (40, 40), (0, 200, 0)).save(photos / "circle" / "green.png")
    with pytest.raises(ConfigError, match="--rebuild"):  # still the index built with IVF4,Flat
        build(loaded, photos, index_dir, factory="Flat")
    assert build(loaded, photos, index_dir).added == 1
    store = IndexStore.open_read(index_dir)
    assert store.row_by_path(photos.resolve() / "circle" / "green.png").id == top + 1
    store.close()


def test_factory_strings_keep_cosine_a_cosine():
    spec = faiss_index.IndexSpec
    assert spec(64, "Flat", "cosine", pca=16).full_factory == "PCAW16,L2norm,Flat"
    assert spec(64, "PCA32,IVF2,Flat", "cosine").full_factory == "PCA32,L2norm,IVF2,Flat"
    assert spec(64, "HNSW32", "l2", pca=16, whiten=False).full_factory == "PCA16,HNSW32"
    assert faiss_index.default_search_params("IVF64,PQ8x4fs,RFlat") == "nprobe=16,k_factor_rf=16"


def test_too_few_training_vectors_warn_once_in_our_words(capfd):
    spec = faiss_index.IndexSpec(64, factory="IVF8,PQ16")
    vectors = np.random.default_rng(0).normal(size=(300, 64)).astype(np.float32)
    advice = faiss_index.train(faiss_index.create(spec), vectors, spec)
    assert len(advice) == 1 and "IVF8 wants 312" in advice[0] and "PQ wants 9,984" in advice[0]
    assert "WARNING clustering" not in capfd.readouterr().err  # FAISS's 17 lines are gone

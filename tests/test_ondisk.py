"""IVF indexes with their inverted lists on disk (--on-disk): the same results as in memory, list
files never changed once written, readers mapping them read-only."""

import hashlib
import os
import shutil
import subprocess
import sys

import faiss
import numpy as np
import pytest

import alexsuite
from alexsuite.errors import ConfigError, DataError
from alexsuite.retrieval import index as faiss_index
from alexsuite.retrieval import ondisk
from alexsuite.retrieval.store import IndexStore


def _trained(d=16, n=3000, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    spec = faiss_index.IndexSpec(d, "IVF16,Flat", search_params="nprobe=16")
    index = faiss_index.create(spec)
    faiss_index.train(index, x, spec)
    return index, x


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_lists_on_disk_search_as_in_memory_and_are_never_changed(tmp_path):
    memory, x = _trained()
    memory.add_with_ids(x[:2000], np.arange(2000))
    disk, _ = _trained()
    first = ondisk.to_disk(disk, tmp_path)
    assert first is None  # nothing to map yet
    first = ondisk.add(disk, x[:10], np.arange(10), tmp_path, remove=np.arange(10))
    ondisk.add(disk, x[:2000], np.arange(2000), tmp_path)
    second = ondisk.lists_file(disk)
    faiss.write_index(disk, str(tmp_path / "index.faiss"))
    ondisk.remove_unreferenced(tmp_path, second)
    assert not first.exists() and [p.name for p in tmp_path.glob("*.ivfdata")] == [second.name]
    before = _digest(second)

    reader = ondisk.read(tmp_path / "index.faiss")
    assert ondisk.is_on_disk(reader) and reader.ntotal == 2000
    for index in (memory, reader):
        index.nprobe = 16
    np.testing.assert_array_equal(memory.search(x[:50], 10)[1], reader.search(x[:50], 10)[1])

    ondisk.add(disk, x[2000:], np.arange(2000, 3000), tmp_path, remove=np.arange(100))
    assert _digest(second) == before  # the reader's file is untouched by a later commit
    disk.nprobe = 16
    assert disk.ntotal == 2900
    found = disk.search(x[:200], 1)[1][:, 0]
    assert (found[:100] != np.arange(100)).all() and (found[100:] == np.arange(100, 200)).all()
    np.testing.assert_array_equal(reader.search(x[:5], 1)[1][:, 0], np.arange(5))  # still the old state


def test_on_disk_needs_an_ivf_factory():
    with pytest.raises(ConfigError, match="IVF factory"):
        faiss_index.create(faiss_index.IndexSpec(8, "HNSW32", on_disk=True))


def test_index_on_disk_matches_in_memory_through_updates(trained_run, val_photos, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(val_photos, photos)
    settings = dict(factory="IVF4,Flat", workers=0)
    memory = alexsuite.Index(tmp_path / "memory", model=trained_run, device="cpu")
    disk = alexsuite.Index(tmp_path / "disk", model=trained_run, device="cpu")
    memory.add(photos, **settings)
    (report,) = disk.add(photos, on_disk=True, **settings)
    assert report.added == 24 and len(list((tmp_path / "disk").glob("lists-*.ivfdata"))) == 1

    gone = sorted((photos / "circle").glob("*.png"))[0]
    gone.unlink()
    for index in (memory, disk):
        (report,) = index.add(photos, prune=True)
        assert (report.removed, report.total) == (1, 23)
    assert len(list((tmp_path / "disk").glob("lists-*.ivfdata"))) == 1  # the replaced file is gone
    store = IndexStore.open_read(tmp_path / "disk")
    assert ondisk.is_on_disk(store.index) and store.index.ntotal == 23
    store.close()

    queries = sorted(photos.rglob("*.png"))[:6]
    for a, b in zip(memory.search(queries, k=5), disk.search(queries, k=5)):
        assert [h.path for h in a.results] == [h.path for h in b.results]
    with pytest.raises(ConfigError, match="on-disk"):
        disk.add(photos, on_disk=False)


@pytest.mark.slow
def test_torchrun_shards_merge_into_the_same_index(trained_run, shapes_dir, tmp_path):
    """An on-disk index trained on one folder, then grown by two processes that each add their
    slice to a shard merged by process 0: the rows and vectors equal one process's."""
    opts = ["--model", str(trained_run), "--workers", "0", "--batch-size", "8", "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "alexsuite.cli", "index"]
    torchrun = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--standalone", "--nproc_per_node", "2"]
    one, two = tmp_path / "one", tmp_path / "two"
    for index in (one, two):
        first = [str(shapes_dir / "train" / "circle"), "--factory", "IVF4,Flat", "--on-disk", "--index", str(index)]
        subprocess.run([*cli, *first, *opts], check=True, env=env, capture_output=True)
    grow = [str(shapes_dir / "train"), *opts]
    subprocess.run([*cli, *grow, "--index", str(one)], check=True, env=env, capture_output=True)
    subprocess.run([*torchrun, "-m", "alexsuite.cli", "index", *grow, "--index", str(two)], check=True, env=env)
    a, b = IndexStore.open_read(one), IndexStore.open_read(two)
    assert a.count() == b.count() == b.index.ntotal == 72
    assert not list(two.glob(".shard-*")) and len(list(two.glob("lists-*.ivfdata"))) == 1
    for path in sorted((shapes_dir / "train").rglob("*.png")):
        ra, rb = a.row_by_path(path), b.row_by_path(path)
        assert (ra.sha256, ra.label) == (rb.sha256, rb.label)
        va, vb = a.reconstruct(np.array([ra.id])), b.reconstruct(np.array([rb.id]))
        np.testing.assert_allclose(va, vb, rtol=1e-4, atol=1e-5)
    a.close()
    b.close()


def test_a_missing_or_truncated_lists_file_is_refused_in_one_line(trained_run, val_photos, tmp_path):
    index = alexsuite.Index(tmp_path / "disk", model=trained_run, device="cpu")
    index.add(val_photos, factory="IVF4,Flat", on_disk=True, workers=0)
    index.close()
    (lists,) = (tmp_path / "disk").glob("lists-*.ivfdata")
    with open(lists, "r+b") as f:
        f.truncate(64)  # reading past a mapped file's end would be SIGBUS, not an exception
    with pytest.raises(DataError, match="ivfdata.*--rebuild"):
        IndexStore.open_read(tmp_path / "disk")
    lists.unlink()
    with pytest.raises(DataError, match="ivfdata.*--rebuild"):
        IndexStore.open_read(tmp_path / "disk")

"""Hostile and odd inputs through every command, each a real `alexsuite` process under a time
limit: it must exit 0 (done, bad parts skipped and counted) or 2 (one line that says the fix),
never hang, never print a traceback, and never lose or duplicate what an index holds.

The corpus is made here: named pipes, a socket, symlink loops, dangling links, 1x1 and flat
images, truncated, empty and fake images, a decompression bomb, a name that is not UTF-8,
hostile VOC and COCO files, tampered detectors, a model trained to nan. Read-only and full
disks are real file systems, mounted in a private mount namespace (`unshare`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import faiss
import pytest
import torch
from PIL import Image

from alexsuite.fileio import file_sha256

from .conftest import draw_shape, make_voc_scenes

LIMIT = 180  # seconds: far beyond any of these commands; reaching it means a hang


def alexsuite(*args, timeout: float = LIMIT, prefix=(), cwd=None) -> subprocess.CompletedProcess:
    """Run the real command line; fail on a hang, a traceback, or an exit status but 0 and 2."""
    command = [*prefix, sys.executable, "-m", "alexsuite.cli", *[str(a) for a in args]]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, errors="replace")
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s: alexsuite {' '.join(map(str, args))}")
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode in (0, 2), (done.returncode, done.stderr[-2000:])
    if done.returncode == 2:  # it says why: one error line, or a warning for each input it skipped
        errors = [line for line in done.stderr.splitlines() if line.startswith(("error:", "Error:"))]
        assert len(errors) <= 1 and done.stderr.strip(), done.stderr
    return done


def refused(done, *words) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    for w in words:
        assert w in done.stderr, (w, done.stderr)


def index_state(index: Path) -> tuple[int, int, int]:
    """(rows, vectors, distinct real paths of the rows)."""
    db = sqlite3.connect(index / "meta.sqlite")
    paths = [r[0] for r in db.execute("SELECT path FROM images")]
    db.close()
    vectors = faiss.read_index(str(index / "index.faiss")).ntotal
    return len(paths), vectors, len({os.path.realpath(p) for p in paths})


def png_bomb(path: Path, side: int) -> None:
    """A tiny PNG whose header claims side x side pixels."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """photos/<class>/: 12 good images a class, and beside them every odd thing a folder holds."""
    import numpy as np

    root = tmp_path_factory.mktemp("hostile") / "photos"
    rng = np.random.default_rng(7)
    for kind in ("circle", "square"):
        (root / kind).mkdir(parents=True)
        for i in range(12):
            draw_shape(kind, rng).save(root / kind / f"{kind}_{i:02d}.png")
    odd = root / "circle"
    os.mkfifo(odd / "pipe.jpg")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(odd / "sock.png"))
    sock.close()
    os.symlink("..", odd / "loop")
    os.symlink("nowhere.jpg", odd / "dangling.jpg")
    os.symlink("circle_00.png", odd / "again.png")  # the same file twice
    (odd / "folder.jpg").mkdir()
    Image.new("RGB", (1, 1), (200, 10, 10)).save(odd / "one.png")
    Image.new("RGB", (8, 8), (10, 200, 10)).save(odd / "flat.png")
    (odd / "empty.jpg").write_bytes(b"")
    (odd / "text.jpg").write_text("not an image")
    (odd / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40)
    png_bomb(odd / "bomb.png", 30_000)
    Image.new("RGB", (30, 30), (90, 90, 200)).save(os.fsencode(odd) + b"/caf\xe9.png")
    (odd / "notes.txt").write_text("a note")
    return root


@pytest.fixture(scope="module")
def hostile_index(corpus, trained_run, tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("hidx") / "index"
    done = alexsuite("index", corpus, "--model", trained_run, "--index", index, "--workers", "2", "--json")
    assert done.returncode == 0
    return index


def test_a_folder_of_odd_files_is_indexed_once_each(corpus, hostile_index, trained_run):
    done = alexsuite("index", corpus, "--model", trained_run, "--index", hostile_index, "--workers", "2", "--json")
    report = json.loads(done.stdout)
    assert report["added"] == 0 and report["total"] == 26  # 24 shapes, one.png, flat.png: nothing twice
    assert index_state(hostile_index) == (26, 26, 26)
    assert "named pipe" in done.stderr and "not followed again" in done.stderr and "taken once" in done.stderr
    assert "skipped 2 unreadable" in done.stderr and "caf\ufffd.png" in done.stderr and "PosixPath" not in done.stderr
    assert report["failed"] >= 4  # empty, text, truncated, bomb: skipped and counted


def test_queries_that_are_pipes_or_odd_images_never_hang(corpus, hostile_index):
    odd = corpus / "circle"
    done = alexsuite("search", odd / "pipe.jpg", "--index", hostile_index)
    refused(done, "named pipe")
    done = alexsuite("search", odd / "one.png", odd / "pipe.jpg", odd / "bomb.png", "--index", hostile_index, "--json")
    lines = [json.loads(x) for x in done.stdout.splitlines()]
    assert done.returncode == 0 and len(lines) == 3 and lines[0]["results"] and "error" in lines[1]
    assert "too large" in lines[2]["error"]
    sheet = corpus.parent / "no" / "such" / "folder" / "sheet.png"
    alexsuite("search", odd / "circle_01.png", "--index", hostile_index, "--sheet", sheet)
    assert sheet.is_file()


def test_detect_and_proposals_take_tiny_flat_and_unreadable_images(corpus, trained_detector, tmp_path):
    odd = corpus / "circle"
    images = [odd / "one.png", odd / "flat.png", odd / "pipe.jpg", odd / "text.jpg", odd / "circle_00.png"]
    for mode in ("rcnn", "fast"):
        done = alexsuite("detect", *images, "--detector", trained_detector, "--mode", mode, "--json", "--workers", "0")
        lines = [json.loads(x) for x in done.stdout.splitlines()]
        assert done.returncode == 0 and [x["detections"] for x in lines[:2]] == [[], []], done.stderr
        assert "named pipe" in done.stderr
    done = alexsuite("proposals", *images, "--workers", "2")
    assert done.returncode == 0 and "named pipe" in done.stderr
    refused(alexsuite("proposals", odd / "pipe.jpg", "--workers", "0"), "named pipe")


def test_pictures_of_images_with_the_same_name_do_not_overwrite_each_other(corpus, trained_detector, tmp_path):
    for folder, source in (("a", corpus / "circle" / "circle_00.png"), ("b", corpus / "square" / "square_00.png")):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "x.png")
    out = tmp_path / "drawn"
    alexsuite(
        "detect",
        tmp_path / "a" / "x.png",
        tmp_path / "b" / "x.png",
        "--detector",
        trained_detector,
        "--out",
        out,
        "--workers",
        "0",
    )
    assert sorted(p.name for p in out.iterdir()) == ["a__x.png", "b__x.png"]


def test_an_image_without_proposals_in_an_evaluated_set(trained_detector, tmp_path):
    voc = make_voc_scenes(tmp_path / "voc", "val", 3, seed=9)
    Image.new("RGB", (1, 1)).save(voc / "JPEGImages" / "tiny.jpg")
    (voc / "Annotations" / "tiny.xml").write_text(
        "<annotation><filename>tiny.jpg</filename><size><width>1</width><height>1</height></size></annotation>"
    )
    with open(voc / "ImageSets" / "Main" / "val.txt", "a") as f:
        f.write("tiny\n")
    done = alexsuite("eval-detector", voc, "--split", "val", "--detector", trained_detector, "--json", "--workers", "0")
    assert done.returncode == 0 and json.loads(done.stdout)["images"] == 4


def test_non_finite_learning_rates_and_losses_stop_training(shapes_dir, tmp_path):
    refused(alexsuite("train", shapes_dir, "--lr", "nan", "--out", tmp_path / "nan"), "--lr must be a finite")
    refused(alexsuite("train", shapes_dir, "--lr", "-1", "--out", tmp_path / "neg"), "--lr must be a finite")
    assert not (tmp_path / "nan").exists()
    done = alexsuite(
        "train",
        shapes_dir,
        "--lr",
        "1e30",
        "--epochs",
        "2",
        "--batch-size",
        "12",
        "--workers",
        "0",
        "--out",
        tmp_path / "big",
        "-q",
    )
    refused(done, "training loss became", "epoch 1", "lower --lr")
    assert not (tmp_path / "big" / "best.pt").exists() and not (tmp_path / "big" / "last.pt").exists()


def test_a_model_with_nan_weights_is_refused_by_index_and_search(trained_run, corpus, hostile_index, tmp_path):
    from alexsuite.models.checkpoint import read_checkpoint, save_checkpoint

    state = read_checkpoint(trained_run / "best.pt")
    state["model"] = {
        k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()
    }
    save_checkpoint(tmp_path / "nan.pt", state)
    done = alexsuite(
        "index", corpus / "square", "--model", tmp_path / "nan.pt", "--index", tmp_path / "idx", "--workers", "0"
    )
    refused(done, "nan.pt gives fc7 vectors that are not finite")


def test_index_paths_that_are_files_or_unwritable(corpus, trained_run, tmp_path):
    (tmp_path / "file").write_text("x")
    refused(alexsuite("index", corpus, "--model", trained_run, "--index", tmp_path / "file"), "a file is in the way")
    refused(alexsuite("search", corpus / "circle" / "circle_00.png", "--index", tmp_path / "file"), "a file is in")


def test_a_missing_index_file_names_the_command_that_rebuilds_it(corpus, trained_run, tmp_path):
    index = tmp_path / "idx"
    alexsuite("index", corpus / "square", "--model", trained_run, "--index", index, "--workers", "0")
    (index / "index.faiss").unlink()
    refused(alexsuite("search", corpus / "circle" / "circle_00.png", "--index", index), "--rebuild", "is missing")
    refused(alexsuite("index", corpus / "square", "--index", index, "--workers", "0"), "--rebuild")
    done = alexsuite("index", corpus / "square", "--index", index, "--rebuild", "--workers", "0", "--json")
    assert json.loads(done.stdout)["total"] == 12 and index_state(index) == (12, 12, 12)


def test_a_killed_rebuild_leaves_the_old_index_whole(corpus, trained_run, tmp_path):
    index = tmp_path / "idx"
    alexsuite("index", corpus / "square", "--model", trained_run, "--index", index, "--workers", "0")
    before = index_state(index)
    big = tmp_path / "big"
    for i in range(20):
        shutil.copytree(
            corpus / "circle",
            big / f"c{i}",
            symlinks=True,
            ignore=shutil.ignore_patterns("pipe.jpg", "sock.png", "loop"),
        )
    command = [
        sys.executable,
        "-m",
        "alexsuite.cli",
        "index",
        str(big),
        "--index",
        str(index),
        "--rebuild",
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--commit-every",
        "0",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = tmp_path / ".idx.rebuild"
    deadline = time.monotonic() + LIMIT
    while not (staging / "index.faiss").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert index_state(index) == before  # the old index, untouched and searchable
    alexsuite("search", corpus / "square" / "square_00.png", "--index", index)
    done = alexsuite("index", big, "--index", index, "--rebuild", "--workers", "0", "--json")
    assert json.loads(done.stdout)["total"] == index_state(index)[0] > before[0] and not staging.exists()


def test_tampered_detectors_are_refused(trained_detector, corpus, tmp_path):
    copy = tmp_path / "det"
    shutil.copytree(trained_detector, copy, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((copy / "detector.json").read_text())
    (copy / "heads.pt").write_bytes(b"\x80\x04not a pickle at all")
    meta["files"]["heads.pt"] = file_sha256(copy / "heads.pt")
    (copy / "detector.json").write_text(json.dumps(meta))
    image = corpus / "circle" / "circle_00.png"
    refused(alexsuite("detect", image, "--detector", copy, "--workers", "0"), "not a detector's heads file")
    torch.save({"svm_weight": torch.zeros(1, 3)}, copy / "heads.pt")
    meta["files"]["heads.pt"] = file_sha256(copy / "heads.pt")
    (copy / "detector.json").write_text(json.dumps(meta))
    refused(alexsuite("detect", image, "--detector", copy, "--workers", "0"), "no SVM weights")
    (copy / "detector.json").write_text(json.dumps({**meta, "classes": "cat"}))
    refused(alexsuite("detect", image, "--detector", copy, "--workers", "0"), "malformed classes")


def test_hostile_voc_and_coco_files(corpus, trained_detector, tmp_path):
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (20, 20)).save(secret)
    voc = make_voc_scenes(tmp_path / "voc", "val", 2, seed=5)
    xml = voc / "Annotations" / "val_000.xml"
    xml.write_text(xml.read_text().replace("val_000.jpg", "../../secret.jpg"))
    refused(alexsuite("eval-detector", voc, "--split", "val", "--detector", trained_detector), "lies outside")
    xml.write_text(xml.read_text().replace("../../secret.jpg", "val_000.jpg").replace("<name>", "<name>zebra", 1))
    done = alexsuite("eval-detector", voc, "--split", "val", "--detector", trained_detector, "--workers", "0")
    assert done.returncode == 0 and "not scored" in done.stderr and "zebra" in done.stderr

    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    good = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 3, "name": "circle"}],
        "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]}],
    }
    cases = {
        "no annotations": ({**good, "annotations": []}, "lists no annotations"),
        "unknown image": ({**good, "annotations": [{**good["annotations"][0], "image_id": 5}]}, "image_id 5"),
        "unknown category": (
            {**good, "annotations": [{**good["annotations"][0], "category_id": 99}]},
            "category_id 99",
        ),
        "bad box": ({**good, "annotations": [{**good["annotations"][0], "bbox": [1, 2]}]}, "bbox must be four"),
        "outside": ({**good, "images": [{"id": 1, "file_name": "/etc/passwd"}]}, "lies outside"),
        "not json": ("{", "not a readable JSON"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        refused(alexsuite("eval-detector", path, "--detector", trained_detector), words)


def test_training_data_mistakes_are_named(tmp_path, shapes_dir, trained_run):
    one = tmp_path / "one"
    for kind in ("circle", "square"):
        (one / kind).mkdir(parents=True)
        shutil.copy(next((shapes_dir / "train" / kind).iterdir()), one / kind / "x.png")
    refused(alexsuite("train", one, "--val-split", "0.1", "--out", tmp_path / "run"), "the training split is empty")
    only_train = tmp_path / "only"
    shutil.copytree(shapes_dir / "train", only_train / "train")
    done = alexsuite("eval-retrieval", only_train, "--model", trained_run)
    refused(done, "expected train/ and val/")
    assert "--val-split" not in done.stderr
    refused(
        alexsuite("eval-retrieval", tmp_path / "nowhere", "--model", trained_run, "--factory", "IVF9x"), "--factory"
    )


def test_eval_takes_the_same_classes_in_another_order(trained_run, shapes_dir, tmp_path):
    from alexsuite.data.datasets import folder_dataset
    from alexsuite.training.evaluate import in_model_order

    data = folder_dataset(shapes_dir / "val", 32)
    flipped = in_model_order(data, list(reversed(data.classes)))
    assert flipped.classes == list(reversed(data.classes))
    assert [flipped.classes[i] for i in flipped.labels] == [data.classes[i] for i in data.labels]


def _namespace_works() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


needs_namespace = pytest.mark.skipif(not _namespace_works(), reason="needs `unshare -rm` to mount test file systems")


@needs_namespace
def test_a_read_only_index_is_searched_but_not_written(corpus, trained_run, tmp_path):
    index = tmp_path / "idx"
    alexsuite("index", corpus / "square", "--model", trained_run, "--index", index, "--workers", "0")
    read_only = (
        "unshare",
        "-rm",
        "sh",
        "-c",
        f'mount --bind "{index}" "{index}" && mount -o remount,bind,ro "{index}" && exec "$0" "$@"',
    )
    done = alexsuite("search", corpus / "square" / "square_00.png", "--index", index, prefix=read_only)
    assert done.returncode == 0 and "square_" in done.stdout
    done = alexsuite("index", corpus / "circle", "--index", index, "--workers", "0", prefix=read_only)
    refused(done, "cannot write", "use another --index")


@needs_namespace
def test_a_full_disk_stops_in_one_line_and_keeps_what_was_committed(corpus, trained_run, tmp_path):
    disk, py = tmp_path / "disk", f'"{sys.executable}" -m alexsuite.cli'
    disk.mkdir()
    count = (
        f"import sqlite3; print(sqlite3.connect('{disk}/a/meta.sqlite').execute('SELECT COUNT(*) FROM images')"
        ".fetchone()[0])"
    )
    script = "\n".join(
        [
            f'mount -t tmpfs -o size=4m tmpfs "{disk}" || exit 99',
            f'{py} index "{corpus / "square"}" --model "{trained_run}" --index "{disk}/a" --workers 0 || exit 98',
            f'dd if=/dev/zero of="{disk}/filler" bs=4k 2>/dev/null; truncate -s -64k "{disk}/filler"',  # 64 KB left
            f'{py} index "{corpus / "circle"}" --index "{disk}/a" --workers 0; echo "rc=$?"',
            f'"{sys.executable}" -c "{count}"',
        ]
    )
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=LIMIT)
    assert "Traceback" not in done.stderr and "rc=2" in done.stdout, done.stdout + done.stderr
    assert "the disk is full" in done.stderr and "run the same command again" in done.stderr
    assert done.stdout.strip().splitlines()[-1] == "12"  # the first run's rows, whole


def test_a_class_without_training_objects_is_named(voc_scenes, trained_run, tmp_path):
    from alexsuite.data.detection_sets import read_voc

    train = read_voc(voc_scenes, "train")
    names = {c: i for i, c in enumerate(train.classes + ["zebra"])}
    coco = {"images": [], "annotations": [], "categories": [{"id": i, "name": c} for c, i in names.items()]}
    for k, item in enumerate(train.items[:6]):
        coco["images"].append({"id": k, "file_name": item.image.name, "width": item.width, "height": item.height})
        for j, (box, label) in enumerate(zip(item.boxes.tolist(), item.labels)):
            x1, y1, x2, y2 = box
            coco["annotations"].append(
                {"id": 100 * k + j, "image_id": k, "category_id": names[label], "bbox": [x1, y1, x2 - x1, y2 - y1]}
            )
    path = tmp_path / "train.json"
    path.write_text(json.dumps(coco))
    done = alexsuite(
        "train-detector",
        path,
        "--images",
        voc_scenes / "JPEGImages",
        "--backbone",
        trained_run,
        "--finetune-iters",
        "0",
        "--max-boxes",
        "30",
        "--no-train-fast",
        "--workers",
        "0",
        "--out",
        tmp_path / "det",
        "-q",
    )
    assert done.returncode == 0 and "no training objects of zebra" in done.stderr, done.stderr


# ---- found by an adversarial review: each case in-process, through the same command line ----


def cli(*args):
    """The command line in this process (no hang possible here): exit 0 or 2, no exception."""
    from click.testing import CliRunner

    from alexsuite.cli.main import main

    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code in (0, 2) and (result.exception is None or isinstance(result.exception, SystemExit)), (
        result.output,
        result.exception,
    )
    return result


def test_an_index_is_never_written_over_other_files(corpus, trained_run, tmp_path):
    docs = tmp_path / "Docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "thesis.txt").write_text("years of work")
    for index in (docs, corpus / "square"):
        for rebuild in ((), ("--rebuild",)):
            done = cli("index", corpus / "square", "--model", trained_run, "--index", index, *rebuild)
            assert done.exit_code == 2 and "not an index's" in done.output
    assert (docs / "thesis.txt").read_text() == "years of work" and (docs / "sub").is_dir()
    assert len(list((corpus / "square").glob("*.png"))) == 12
    for name in ("", ".", "..", "a/.."):
        done = cli("index", corpus / "square", "--model", trained_run, "--index", name, "--rebuild")
        assert done.exit_code == 2 and "give the index a name" in done.output


def test_a_lost_manifest_or_lost_vectors_are_not_papered_over(corpus, trained_run, tmp_path):
    index = tmp_path / "idx"
    cli("index", corpus / "square", "--model", trained_run, "--index", index, "--workers", "0")
    saved = (index / "index.faiss").read_bytes()
    cli("index", corpus / "circle", "--index", index, "--workers", "0")
    (index / "index.faiss").write_bytes(saved)  # an older copy put back: the circles' rows have no vectors
    done = cli("index", corpus / "circle", "--index", index, "--workers", "0", "--json")
    assert done.exit_code == 0 and index_state(index)[0] == index_state(index)[1] == 26
    (index / "manifest.json").unlink()
    done = cli("index", corpus / "circle", "--index", index, "--workers", "0")
    assert done.exit_code == 2 and "--rebuild" in done.output and "--model" in done.output
    done = cli("index", corpus / "circle", "--index", index, "--rebuild", "--workers", "0")
    assert done.exit_code == 2 and "pass --model" in done.output  # the manifest named the model
    done = cli("index", corpus / "circle", "--index", index, "--rebuild", "--model", trained_run, "--workers", "0")
    assert done.exit_code == 0 and index_state(index) == (26, 26, 26)  # circle/loop leads to the squares too


def test_damaged_index_files_are_refused_in_one_line(corpus, trained_run, tmp_path):
    index, query = tmp_path / "idx", corpus / "square" / "square_00.png"
    cli("index", corpus / "square", "--model", trained_run, "--index", index, "--workers", "0")
    good, good_db = (index / "index.faiss").read_bytes(), (index / "meta.sqlite").read_bytes()
    other = faiss.IndexIDMap2(faiss.IndexFlatL2(64))
    other.add_with_ids(torch.zeros(3, 64).numpy(), torch.arange(3).numpy())
    faiss.write_index(other, str(index / "index.faiss"))
    for command in (("search", query), ("index", corpus / "square", "--workers", "0")):
        done = cli(*command, "--index", index)
        assert done.exit_code == 2 and "64-d vectors" in done.output
    (index / "index.faiss").write_bytes(good)
    db = sqlite3.connect(index / "meta.sqlite")
    db.executescript("CREATE TABLE x AS SELECT id, path FROM images; DROP TABLE images; ALTER TABLE x RENAME TO images")
    db.close()
    for command in (("search", query), ("index", corpus / "square", "--workers", "0")):
        done = cli(*command, "--index", index)
        assert done.exit_code == 2 and "tables differ" in done.output
    assert faiss.read_index(str(index / "index.faiss")).ntotal == 12  # nothing removed
    (index / "meta.sqlite").write_bytes(good_db)
    (index / ".lock").unlink()
    (index / ".lock").mkdir()
    done = cli("index", corpus / "square", "--index", index, "--workers", "0")
    assert done.exit_code == 2 and "not a lock file" in done.output


def test_factories_that_would_crash_faiss_are_refused(corpus, trained_run, tmp_path):
    for factory in ("HNSW1", "HNSW0", "HNSW32,SQ0", "IVF0,Flat", "NSG0"):
        done = cli(
            "index", corpus / "square", "--model", trained_run, "--index", tmp_path / factory, "--factory", factory
        )
        assert done.exit_code == 2 and "--factory" in done.output, factory


def test_hostile_annotations_found_by_review(corpus, trained_detector, tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    good = {
        "images": [{"id": 1, "file_name": "a.png"}],
        "categories": [{"id": 3, "name": "circle"}],
        "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "bbox": [1, 1, 10, 10]}],
    }
    ann = good["annotations"][0]
    cases = {
        "crowd": {**good, "annotations": [{**ann, "iscrowd": "0"}]},
        "list id": {**good, "annotations": [{**ann, "image_id": [1]}]},
        "list category": {**good, "categories": [{"id": [3], "name": "circle"}]},
        "huge": {**good, "annotations": [{**ann, "bbox": [1, 1, 10**400, 10]}]},
        "null": {**good, "images": [{"id": 1, "file_name": "a\0.png"}]},
        "twice": {**good, "images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "a.png"}]},
    }
    for name, content in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.json"
        path.write_text(json.dumps(content))
        done = cli("eval-detector", path, "--detector", trained_detector)
        assert done.exit_code == 2 and "error:" in done.output, name
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    assert cli("eval-detector", deep, "--detector", trained_detector).exit_code == 2

    voc = make_voc_scenes(tmp_path / "voc", "val", 2, seed=5)
    xml = voc / "Annotations" / "val_000.xml"
    text = xml.read_text()
    xml.write_text('<?xml version="1.0" encoding="klingon"?>' + text)
    assert cli("eval-detector", voc, "--detector", trained_detector).exit_code == 2
    xml.write_text(text.replace("<size>", "<nosize>").replace("</size>", "</nosize>"))
    png_bomb(voc / "JPEGImages" / "val_000.jpg", 30_000)
    done = cli("eval-detector", voc, "--detector", trained_detector)
    assert done.exit_code == 2 and "too large" in done.output
    (voc / "ImageSets" / "Main" / "val.txt").write_bytes(b"val_000\n\xff\n")
    assert cli("eval-detector", voc, "--detector", trained_detector).exit_code == 2


def test_numbers_that_cannot_work_are_refused_before_any_work(
    voc_scenes, trained_run, trained_detector, corpus, tmp_path
):
    for option in (("--lr", "nan"), ("--lr", "-1"), ("--svm-c", "nan"), ("--svm-c", "-1"), ("--fast-fraction", "nan")):
        done = cli("train-detector", voc_scenes, "--backbone", trained_run, *option, "--out", tmp_path / "d")
        assert done.exit_code == 2 and not (tmp_path / "d").exists(), option
    image = corpus / "square" / "square_00.png"
    for option in (("--threshold", "nan"), ("--nms", "nan")):
        assert cli("detect", image, "--detector", trained_detector, *option).exit_code == 2
    assert cli("train", "--seed", str(10**30), "--out", tmp_path / "t").exit_code == 2
    assert cli("detect", image, "--detector", trained_detector, "--device", "cpu:0", "--workers", "0").exit_code == 0


def test_damaged_checkpoints_and_runs_are_refused(trained_run, shapes_dir, tmp_path):
    from alexsuite.models.checkpoint import read_checkpoint, save_checkpoint

    good = read_checkpoint(trained_run / "best.pt")
    damages = {
        "arch": lambda s: s.pop("arch"),
        "preprocess": lambda s: s.update(preprocess="{"),
        "classes": lambda s: s.update(classes=[]),
        "config": lambda s: s.update(config="not json"),
        "model": lambda s: s.update(model=5),
    }
    for name, damage in damages.items():
        state = dict(good)
        damage(state)
        save_checkpoint(tmp_path / f"{name}.pt", state)
        done = cli("eval", tmp_path / f"{name}.pt", shapes_dir)
        assert done.exit_code == 2 and "damaged" in done.output, name
    run = tmp_path / "run"
    cli("train", shapes_dir, "--epochs", "1", "--batch-size", "12", "--workers", "0", "--out", run, "-q")
    assert cli("train", shapes_dir, "--epochs", "1", "--out", run, "-q").exit_code == 2  # would replace it
    last = read_checkpoint(run / "last.pt")
    save_checkpoint(run / "last.pt", {**last, "history": "{"})
    done = cli("train", "--resume", run, "--epochs", "2", "-q")
    assert done.exit_code == 2 and "cannot resume" in done.output


def test_a_tampered_detector_json_is_refused(trained_detector, corpus, tmp_path):
    image = corpus / "square" / "square_00.png"
    for change in ({"layer": "conv1"}, {"layer": "pool5"}, {"preprocess": {"crop_size": 0}}):
        copy = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        shutil.copytree(trained_detector, copy, ignore=shutil.ignore_patterns("cache"))
        meta = json.loads((copy / "detector.json").read_text())
        meta.update({k: {**meta[k], **v} if isinstance(v, dict) else v for k, v in change.items()})
        (copy / "detector.json").write_text(json.dumps(meta))
        assert cli("detect", image, "--detector", copy, "--workers", "0").exit_code == 2, change


def test_caches_that_are_not_what_was_written_are_computed_again(corpus, tmp_path):
    image = corpus / "square" / "square_00.png"
    cache = tmp_path / "cache"
    first = alexsuite("proposals", image, "--cache", cache, "--workers", "0", "--json")
    entry = next(cache.glob("*.npy"))
    for poison in ("empty", "fifo", "nan"):
        entry.unlink()
        if poison == "empty":
            entry.write_bytes(b"")
        elif poison == "fifo":
            os.mkfifo(entry)
        else:
            import numpy as np

            np.save(entry, np.full((3, 4), np.nan, np.float32))
        again = alexsuite("proposals", image, "--cache", cache, "--workers", "0", "--json")
        assert again.returncode == 0 and again.stdout == first.stdout, poison


def test_a_postscript_file_named_jpg_is_never_handed_to_ghostscript(tmp_path):
    from alexsuite.data.decode import decode_image
    from alexsuite.errors import ImageDecodeError

    eps = tmp_path / "photo.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageDecodeError, match="not an image file"):
        decode_image(eps)


def test_a_big_search_draws_a_sheet_of_bounded_size(corpus, hostile_index, tmp_path):
    sheet = tmp_path / "sheet.png"
    done = cli("search", corpus / "square", "--index", hostile_index, "-k", "25", "--sheet", sheet)
    assert done.exit_code == 0 and "the sheet shows the first" in done.output
    twenty = tmp_path / "twenty.png"
    cli("search", corpus / "square", "--index", hostile_index, "-k", "20", "--sheet", twenty)
    with Image.open(sheet) as img, Image.open(twenty) as reference:
        assert img.size == reference.size  # the 21st to 25th results are left off the picture

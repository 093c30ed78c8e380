import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexsuite.errors import CheckpointError, ConfigError, ImageDecodeError
from alexsuite.fileio import atomic_write_bytes
from alexsuite.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from alexsuite.training.config import TrainConfig
from alexsuite.training.run import train


class Payload:  # an arbitrary pickled object: weights_only loading must refuse to build it
    pass


def _weights(path):
    return read_checkpoint(path)["model"]


def test_a_run_learns_and_writes_its_directory(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {
        "config.json",
        "last.pt",
        "best.pt",
        "metrics.csv",
        "metrics.json",
        "curves.png",
        "conv1_filters.png",
        "preprocess.json",
    } <= names
    history = json.loads((trained_run / "metrics.json").read_text())
    assert len(history) == 8
    assert history[-1]["val_top1"] >= 0.6  # 3 shape classes: chance is 0.33
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    loaded = load_model(trained_run)
    assert loaded.classes == ["circle", "square", "stripes"] and loaded.arch == "alexnet-small"
    for png in ("curves.png", "conv1_filters.png"):
        from PIL import Image

        with Image.open(trained_run / png) as im:
            im.verify()


@pytest.mark.parametrize("fast", [{}, {"amp": True}, {"channels_last": False}], ids=["default", "amp", "nchw"])
def test_resume_reaches_the_same_state_as_an_uninterrupted_run(shapes_dir, tmp_path, fast):
    # dropout stays on; cpu: cuDNN's default algorithms are not bit-for-bit repeatable on a GPU
    cfg = dict(data=str(shapes_dir), batch_size=12, lr=0.02, workers=0, device="cpu", **fast)
    train(TrainConfig(epochs=3, **cfg), run_dir=tmp_path / "straight")
    train(TrainConfig(epochs=1, **cfg), run_dir=tmp_path / "interrupted")
    train(TrainConfig(epochs=3, workers=0, device="cpu"), resume=tmp_path / "interrupted")
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "interrupted" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    hb = json.loads((tmp_path / "interrupted" / "metrics.json").read_text())
    assert [r["val_top1"] for r in ha] == [r["val_top1"] for r in hb]


def test_val_every_skips_validation_without_changing_the_training(shapes_dir, tmp_path):
    cfg = dict(data=str(shapes_dir), epochs=3, batch_size=12, lr=0.02, schedule="onecycle", workers=0, device="cpu")
    every = train(TrainConfig(**cfg), run_dir=tmp_path / "every")
    sparse = train(TrainConfig(val_every=2, **cfg), run_dir=tmp_path / "sparse")
    a, b = _weights(tmp_path / "every" / "last.pt"), _weights(tmp_path / "sparse" / "last.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # epoch 2 is the 2nd, epoch 3 the last: both validated, with the same numbers as every epoch's run
    assert [r["val_top1"] for r in sparse.history] == [None] + [r["val_top1"] for r in every.history[1:]]
    rows = (tmp_path / "sparse" / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[4:7] == ["", "", ""]  # val_loss, val_top1, val_top5 left empty
    assert sparse.best_top1 == max(r["val_top1"] for r in every.history[1:])
    assert (tmp_path / "sparse" / "best.pt").exists() and (tmp_path / "sparse" / "curves.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="--val-every 1"):
        train(TrainConfig(**{**cfg, "schedule": "plateau"}, val_every=2), run_dir=tmp_path / "plateau")
    assert not (tmp_path / "plateau").exists()


def test_corrupt_images_are_skipped_and_counted_or_fatal_with_strict(shapes_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(shapes_dir, data)
    (data / "train" / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    # workers=2: the failure travels back from a decoding process
    run = train(TrainConfig(data=str(data), epochs=1, batch_size=73, workers=2), run_dir=tmp_path / "r")
    assert run.history[0]["skipped"] == 1
    with pytest.raises(ImageDecodeError, match="broken.png"):
        train(TrainConfig(data=str(data), epochs=1, batch_size=73, workers=0, strict=True), run_dir=tmp_path / "strict")


def test_checkpoints_refuse_other_architectures_garbage_and_pickles(trained_run, tmp_path):
    with pytest.raises(CheckpointError, match="not alexnet"):
        load_model(trained_run, expect_arch="alexnet")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")

    torch.save({"model": Payload()}, tmp_path / "pickle.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_model(tmp_path / "pickle.pt")
    state = read_checkpoint(trained_run / "best.pt")
    state["arch"] = "alexnet"  # weights of alexnet-small labelled as the paper's net
    save_checkpoint(tmp_path / "mislabelled.pt", {k: v for k, v in state.items() if k != "format"})
    with pytest.raises(CheckpointError, match="do not fit alexnet"):
        load_model(tmp_path / "mislabelled.pt")


def test_fingerprint_identifies_the_weights(trained_run):
    a, b = load_model(trained_run), load_model(trained_run / "best.pt")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    with torch.no_grad():
        b.model.classifier[-1].bias[0] += 1e-3
    assert a.fingerprint != b.fingerprint


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.pt"
    save_checkpoint(target, {"epoch": 1})

    def crash(f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as if the run were interrupted mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(target, crash)
    assert read_checkpoint(target)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temp file left behind


@pytest.mark.slow
@pytest.mark.parametrize("amp", [[], ["--amp"]], ids=["fp32", "amp"])
def test_torchrun_two_cpu_processes_match_one_process(shapes_dir, tmp_path, amp):
    common = [
        *amp,
        str(shapes_dir),
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--dropout",
        "0",
        "--workers",
        "0",
        "--device",
        "cpu",
        "-q",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "alexsuite.cli", "train", *common, "--out", str(tmp_path / "one")], check=True, env=env
    )
    torchrun = Path(sys.executable).parent / "torchrun"
    subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "alexsuite.cli",
            "train",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        check=True,
        env=env,
    )
    a, b = _weights(tmp_path / "one" / "last.pt"), _weights(tmp_path / "two" / "last.pt")
    # bf16 rounds each process's half-batch sums differently: agreement to bf16's precision
    atol, rel = (2e-3, 1e-2) if amp else (1e-5, 1e-4)
    assert all(torch.allclose(a[k], b[k], atol=atol, rtol=rel) for k in a)
    ha = json.loads((tmp_path / "one" / "metrics.json").read_text())[0]
    hb = json.loads((tmp_path / "two" / "metrics.json").read_text())[0]
    assert ha["train_loss"] == pytest.approx(hb["train_loss"], rel=rel)
    # bf16 weights a rounding apart may flip one near-tie validation image (24 here: an AVX2 CPU's
    # emulated bf16 did); fp32 must agree exactly
    assert ha["val_top1"] == pytest.approx(hb["val_top1"], abs=1 / 24 + 1e-9 if amp else 0)

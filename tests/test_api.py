"""The Python API (alexsuite.Model, Index, Detector) on real models and files: every kind of
image input, results equal to the CLI's --json, the CLI's errors, batching, pictures, and the
README's example script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import alexsuite
from alexsuite.cli.main import main
from alexsuite.errors import ConfigError, DataError, ImageDecodeError

ROOT = Path(__file__).resolve().parent.parent


def cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def json_lines(result) -> list[dict]:
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def model(trained_run):
    return alexsuite.Model(trained_run, device="cpu")


def test_every_kind_of_image_gives_the_same_prediction(model, val_photos):
    path = val_photos / "circle" / "circle_000.png"
    pil = Image.open(path)
    rgb = np.array(pil.convert("RGB"))
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)
    found = model.predict([path, str(path), pil, rgb, tensor, tensor.float() / 255], k=3)
    assert [p.image for p in found[:3]] == [str(path)] * 3  # a PIL image keeps its file name
    assert found[3].image == "<image 3>"
    for p in found[1:]:
        assert p.labels == found[0].labels
        np.testing.assert_allclose(p.probs, found[0].probs, atol=1e-6)
    assert len(found[0].labels) == 3 and found[0].probs == sorted(found[0].probs, reverse=True)
    assert 0 < sum(found[0].probs) <= 1.0 + 1e-6


def test_predict_equals_classify_json_and_is_batched(model, val_photos):
    api = [p.to_dict() for p in model.predict(val_photos, k=2, ten_crop=True)]
    lines = json_lines(cli("classify", val_photos, "--model", model.source, "-k", 2, "--ten-crop", "--json"))
    assert lines == api and len(lines) == 24
    calls = []
    hook = model.loaded.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        model.predict(val_photos, batch_size=10)
    finally:
        hook.remove()
    assert len(calls) == 3  # 24 images in batches of 10, not 24 forward passes


def test_embed_is_one_row_per_image_and_batch_invariant(model, val_photos):
    files = sorted(val_photos.rglob("*.png"))[:5]
    together = model.embed(files)
    assert together.shape == (5, together.shape[1]) and together.dtype == np.float32
    alone = np.concatenate([model.embed(f) for f in files])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-5)
    assert model.embed(files, layer="pool5").shape[0] == 5


def test_bad_inputs_raise_the_cli_errors(model, val_photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ImageDecodeError, match="no such file") as missing:
        model.predict(tmp_path / "nope.jpg")
    result = cli("classify", tmp_path / "nope.jpg", "--model", model.source)
    assert result.exit_code == 2 and f"skipped {missing.value}" in result.output  # the same line
    strip = model.predict(np.zeros((1, 100_000, 3), np.uint8))[0]  # scaled up, it would need gigabytes
    assert len(strip.labels) == 3  # all three classes of the shapes model
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        model.predict([val_photos / "circle" / "circle_000.png", broken])
    skipped = model.predict([val_photos / "circle" / "circle_000.png", broken], skip_unreadable=True)
    assert skipped[0].error is None and "broken.jpg" in skipped[1].error and not skipped[1].labels
    with pytest.raises(ImageDecodeError):
        model.embed(broken)
    with pytest.raises(DataError, match="HxWx3 uint8"):
        model.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        model.predict(torch.full((3, 8, 8), 2.0))
    with pytest.raises(ConfigError, match="no setting"):
        model.predict(broken, kk=3)


def test_classify_cli_skips_and_counts(model, val_photos, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    shutil.copy(val_photos / "square" / "square_000.png", tmp_path / "good.png")
    result = cli("classify", str(tmp_path / "*.png"), "--model", model.source, "-k", 1)
    assert result.exit_code == 0, result.output
    assert "good.png: square" in result.stdout or "good.png:" in result.stdout
    assert "1 classified, 1 skipped" in result.stderr
    os.mkfifo(tmp_path / "pipe.png")  # in a folder: left out, and said so (never opened)
    folder = cli("classify", tmp_path, "--model", model.source, "-k", 1)
    assert folder.exit_code == 0 and "skipped 1 special file(s)" in folder.stderr and "pipe.png" in folder.stderr
    assert cli("classify", tmp_path / "bad.png", "--model", model.source).exit_code == 2


def test_index_search_equals_search_json(model, val_photos, val_index):
    index = alexsuite.Index(val_index, device="cpu")
    assert len(index) == 24
    query = val_photos / "stripes" / "stripes_001.png"
    api = [r.to_dict() for r in index.search([query, val_photos / "square"], k=4, ids=[0])]
    lines = json_lines(cli("search", query, val_photos / "square", "--id", 0, "--index", val_index, "-k", 4, "--json"))
    assert lines == api and len(lines) == 1 + 8 + 1
    assert all(h["path"] != str(query) for h in api[0]["results"])  # an indexed query is left out
    in_memory = index.search(np.asarray(Image.open(query).convert("RGB")), k=5)[0]
    assert in_memory.query == "<image 0>"
    assert in_memory.results[0].distance == pytest.approx(0, abs=1e-4)  # itself: memory is not a path
    assert [h.path for h in in_memory.results[1:]] == [h["path"] for h in api[0]["results"][:4]]
    with pytest.raises(ImageDecodeError, match="no such file"):
        index.search("nope.png")
    refused = cli("search", "nope.png", "--index", val_index)  # the command names it before loading
    assert refused.exit_code == 2 and "nope.png: no such file or folder" in refused.output
    index.close()


def test_index_add_files_and_folders(model, val_photos, tmp_path):
    index = alexsuite.Index(tmp_path / "idx", model=model.source, device="cpu")
    files = sorted((val_photos / "circle").glob("*.png"))[:3]
    reports = index.add([val_photos / "square", *files], workers=0)
    assert [r.added for r in reports] == [8, 3]
    assert len(index) == 11
    labels = {h.label for h in index.search(files[0], k=10)[0].results}
    # a listed file is labelled by its own folder; a folder's label is its first subfolder (none here)
    assert labels == {None, "circle"}
    assert index.add(files, workers=0)[0].unchanged == 3
    with pytest.raises(DataError, match="no such file"):
        index.add(tmp_path / "nope")
    rebuilt = index.add([val_photos / "square", val_photos / "stripes"], workers=0, rebuild=True)
    assert [r.added for r in rebuilt] == [8, 8] and len(index) == 16  # started afresh once, not per folder


def test_detect_equals_detect_json(trained_detector, voc_scenes, tmp_path):
    images = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[:2]
    det = alexsuite.Detector(trained_detector, device="cpu")
    api = det.detect(images, mode="fast", threshold=-1.0, workers=0)
    lines = json_lines(
        cli("detect", *images, "--detector", trained_detector, "--mode", "fast", "--threshold", -1.0, "--json")
    )
    assert lines == [r.to_dict() for r in api]
    assert any(r.to_dict()["detections"] for r in api)
    pixels = np.asarray(Image.open(images[0]).convert("RGB"))
    (memory,) = det.detect(pixels, mode="fast", threshold=-1.0, workers=0)
    assert memory.to_dict()["detections"] == lines[0]["detections"]
    api[0].save(tmp_path / "boxes.png")
    assert api[0].plot().size == (api[0].width, api[0].height)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        det.detect(tmp_path / "broken.jpg", workers=0)
    assert det.detect(tmp_path / "broken.jpg", workers=0, skip_unreadable=True)[0].error is not None


def test_results_draw_pictures(model, val_photos, val_index, tmp_path):
    (p,) = model.predict(val_photos / "circle" / "circle_001.png", k=2)
    assert p.plot().width == 256
    (hits,) = alexsuite.Index(val_index, device="cpu").search(np.zeros((40, 40, 3), np.uint8), k=3)
    hits.save(tmp_path / "sheet.png")
    with Image.open(tmp_path / "sheet.png") as sheet:
        assert sheet.width > 4 * 128


def test_the_readme_example_runs(trained_run, trained_detector, val_index, val_photos, voc_scenes, tmp_path):
    photo = sorted((voc_scenes / "JPEGImages").glob("*.jpg"))[0]
    image = val_photos / "circle" / "circle_000.png"
    args = [trained_run, val_index, trained_detector, image, photo, tmp_path / "out"]
    done = subprocess.run(
        [sys.executable, ROOT / "examples" / "quickstart.py", *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "nearest:" in done.stdout and "boxes:" in done.stdout
    assert (tmp_path / "out" / "search.png").exists() and (tmp_path / "out" / "detections.png").exists()
    readme = (ROOT / "README.md").read_text()
    assert "examples/quickstart.py" in readme and "alexsuite.Model(" in readme


def test_no_color_and_unknown_options(trained_run, tmp_path):
    skipped = ["classify", str(tmp_path / "nope.png"), "--model", str(trained_run)]  # a yellow warning
    failed = ["classify", str(tmp_path / "nope.png"), "--model", str(tmp_path / "no-run")]  # a red error
    for args, says in ((skipped, "no such file"), (failed, "no such checkpoint")):
        plain = CliRunner().invoke(main, args, env={"NO_COLOR": "1"}, color=True)
        assert plain.exit_code == 2 and "\x1b[" not in plain.output and says in plain.output
        coloured = CliRunner().invoke(main, args, color=True)
        assert coloured.exit_code == 2 and "\x1b[" in coloured.output
    unknown = cli("classify", "--frobnicate")
    assert unknown.exit_code == 2 and "No such option" in unknown.output and "--frobnicate" in unknown.output

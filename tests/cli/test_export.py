"""`alexsuite export` through the real command line: the written ONNX and TorchScript files,
read back by onnxruntime and torch.jit.load, compute what the PyTorch model computes."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from alexsuite.cli.main import main
from alexsuite.data.transforms import normalize
from alexsuite.models.checkpoint import load_model
from alexsuite.models.export import ExportMismatchError, ExportSettings, check_parity, export_model


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def pixels(n: int, size: int, seed: int) -> torch.Tensor:
    """n random RGB crops, uint8 0-255: what a runtime user would feed, before conversion."""
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)


def run_exported(path, fmt: str, images: torch.Tensor) -> np.ndarray:
    x = images.float().numpy()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["images"]
        return session.run(None, {"images": x})[0]
    with torch.no_grad():
        return torch.jit.load(str(path)).eval()(torch.from_numpy(x)).numpy()


@pytest.mark.filterwarnings("ignore:`torch.jit")  # torch 2.14 deprecates torch.jit.load; libtorch users still load it
@pytest.mark.parametrize(
    "fmt,layer", [("onnx", "logits"), ("onnx", "fc7"), ("torchscript", "logits"), ("torchscript", "fc7")]
)
def test_exported_files_compute_what_pytorch_computes(trained_run, tmp_path, fmt, layer):
    out = tmp_path / f"m.{fmt}"
    result = run("export", trained_run, "--format", fmt, "--layer", layer, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    loaded = load_model(trained_run)
    crop, width = loaded.preprocess.crop_size, 1024 if layer == "fc7" else len(loaded.classes)
    assert summary["path"] == str(out) and summary["sidecar"] == str(out) + ".json"
    assert summary["input_shape"] == ["batch", 3, crop, crop] and summary["output_shape"] == ["batch", width]
    assert summary["max_abs_diff"] <= 1e-4 and summary["seconds"] > 0
    for n in (1, 5):  # batch sizes other than the traced one (2) and the checked one (3)
        images = pixels(n, crop, seed=n)
        with torch.no_grad():
            expected = loaded.model.features(normalize(images, loaded.preprocess), layer).numpy()
        got = run_exported(out, fmt, images)
        assert got.shape == (n, width)
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    meta = json.loads((tmp_path / f"m.{fmt}.json").read_text())
    assert (meta["format"], meta["layer"], meta["file"]) == (fmt, layer, out.name)
    assert meta["input"] == {"name": "images", "shape": ["batch", 3, crop, crop], "dtype": "float32"}
    assert meta["classes"] == loaded.classes and meta["fingerprint"] == loaded.fingerprint
    assert (meta["crop_size"], meta["base_size"]) == (crop, loaded.preprocess.base_size)
    assert meta["source"] == str(trained_run / "best.pt") and meta["alexsuite_version"]
    assert "centre-crop" in meta["preprocess"] and meta["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_default_out_is_beside_the_checkpoint_and_the_model_is_left_as_it_was(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    result = run("export", run_dir, "--format", "torchscript", "--layer", "fc7")
    assert result.exit_code == 0, result.output
    assert (run_dir / "model-fc7.torchscript.pt").is_file() and (run_dir / "model-fc7.torchscript.pt.json").is_file()
    assert "wrote" in result.output and "matches PyTorch" in result.output
    folder = tmp_path / "exports"
    folder.mkdir()
    assert run("export", run_dir, "--format", "torchscript", "--out", folder).exit_code == 0
    assert (folder / "model.torchscript.pt").is_file()

    loaded = load_model(run_dir)
    before = (loaded.fingerprint, loaded.model.training, next(loaded.model.parameters()).requires_grad)
    export_model(loaded, tmp_path / "lib.pt", ExportSettings(format="torchscript"))
    assert (loaded.fingerprint, loaded.model.training, next(loaded.model.parameters()).requires_grad) == before


def test_bad_destinations_are_one_line_errors_and_write_nothing(trained_run, tmp_path):
    result = run("export", trained_run, "--out", tmp_path / "missing" / "m.onnx")
    assert result.exit_code == 2 and "does not exist" in result.output and "mkdir -p" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "missing").exists()
    checkpoint = trained_run / "best.pt"
    before = checkpoint.read_bytes()
    result = run("export", trained_run, "--format", "torchscript", "--out", checkpoint)
    assert result.exit_code == 2 and "is the checkpoint being exported" in result.output
    assert checkpoint.read_bytes() == before
    result = run("export", tmp_path / "no-run")
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_onnx_without_the_export_extra_says_how_to_install_it(trained_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # None in sys.modules: `import onnxscript` fails
    result = run("export", trained_run, "--out", tmp_path / "m.onnx")
    assert (
        result.exit_code == 2 and "pip install 'alexsuite[export]'" in result.output and "onnxscript" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()


def test_parity_tolerance_is_relative_to_large_outputs_and_absolute_to_small_ones():
    small, large = torch.full((2, 3), 0.5), torch.full((2, 3), 1000.0)
    assert check_parity(small + 5e-5, small) == pytest.approx(5e-5, rel=1e-3)
    assert check_parity(large + 0.05, large) == pytest.approx(0.05, rel=1e-3)  # 5e-5 of 1000
    for got, expected in ((small + 5e-4, small), (large + 0.5, large), (small * float("nan"), small)):
        with pytest.raises(ExportMismatchError, match="nothing written"):
            check_parity(got, expected)

"""`alexsuite export`."""

from __future__ import annotations

import json
import time

import click

from alexsuite.fileio import display_path
from alexsuite.models.checkpoint import load_model
from alexsuite.models.export import (
    FORMATS,
    LAYERS,
    MIN_OPSET,
    TOLERANCE,
    ExportSettings,
    default_out_path,
    export_model,
    sidecar_path,
)

from .main import main
from .options import option


@main.command(name="export")
@click.argument("run", type=click.Path())
@option(ExportSettings, "format", type=click.Choice(FORMATS))
@option(ExportSettings, "layer", type=click.Choice(LAYERS))
@option(ExportSettings, "opset", type=click.IntRange(min=MIN_OPSET))
@click.option(
    "--out",
    type=click.Path(),
    default=None,
    help="File to write, or an existing folder to write the default name into [default: beside the "
    "checkpoint, model.onnx or model.torchscript.pt; model-fc7.* for --layer fc7].",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON object: path, sidecar, format, layer, input/output shapes, max_abs_diff, seconds.",
)
def export_cmd(run, out, as_json, **settings):
    """Export the model of RUN (a run directory, a checkpoint, or torchvision's AlexNet weights
    file) to ONNX or TorchScript, so it serves without alexsuite or PyTorch.

    The file takes a float32 batch (N, 3, crop, crop) of RGB crops with values 0-255: resize
    the shorter side to the model's base size and centre-crop; the model's mean/std
    normalisation is inside the file. It outputs logits (N, classes) or fc7 features.
    Beside it, FILE.json records the input and output, crop and base sizes, class names,
    the model's fingerprint and the checkpoint it came from.

    Before writing, the file's outputs on a random batch are compared with PyTorch's: a
    difference over 1e-4 x max(1, largest output) is an error (exit 2) and nothing is written.
    ONNX needs `pip install 'alexsuite[export]'` (onnx, onnxscript, onnxruntime). The export
    runs on the CPU and takes a few seconds.

    \b
    Examples:
      alexsuite export runs/demo/train         # the model `alexsuite demo` trained
      alexsuite export runs/demo/train --layer fc7 --format torchscript --out fc7.pt --json
      python -c "import onnxruntime as o, numpy as n; s = o.InferenceSession('runs/demo/train/model.onnx'); \\
        print(s.run(None, {'images': n.zeros((1, 3, 28, 28), n.float32)})[0])"

    Writes the file and FILE.json (default: runs/demo/train/model.onnx and model.onnx.json);
    prints what it wrote (or with --json one object).
    """
    opts = ExportSettings(**settings).check()
    loaded = load_model(run, "cpu")
    start = time.perf_counter()
    path = export_model(loaded, default_out_path(loaded, opts, out), opts)
    seconds = time.perf_counter() - start
    meta = json.loads(sidecar_path(path).read_text())
    summary = {
        "path": str(path),
        "sidecar": str(sidecar_path(path)),
        "format": opts.format,
        "layer": opts.layer,
        "input_shape": meta["input"]["shape"],
        "output_shape": meta["output"]["shape"],
        "max_abs_diff": meta["parity"]["max_abs_diff"],
        "tolerance": TOLERANCE,
        "seconds": round(seconds, 2),
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    click.echo(
        f"wrote {display_path(path)} ({opts.format}, {path.stat().st_size / 1e6:.1f} MB): "
        f"{meta['input']['name']} float32 {_shape(meta['input'])} RGB 0-255 -> {opts.layer} {_shape(meta['output'])}"
    )
    click.echo(
        f"  and {display_path(sidecar_path(path))}; matches PyTorch to {summary['max_abs_diff']:.1e} "
        f"(allowed {TOLERANCE:.0e} x max(1, largest output)); {seconds:.1f} s"
    )


def _shape(tensor: dict) -> str:
    return "(" + ", ".join("N" if d == "batch" else str(d) for d in tensor["shape"]) + ")"

"""A trained backbone as one file that serves without PyTorch: ONNX (onnxruntime, TensorRT,
OpenCV) or TorchScript (libtorch), with a JSON sidecar saying what it takes and gives.

The exported graph takes what a runtime user has: a float32 NCHW batch of RGB crops at the
model's crop size, pixel values 0-255, any batch size. The model's own mean/std normalisation
is inside the graph, so a caller only resizes (shorter side to base_size) and centre-crops.
It gives logits (N, classes) or fc7 features (N, fc width; AlexNet §6.1's image descriptor).

Nothing is written until the serialised bytes have been run and matched against PyTorch on a
random batch: an export that does not compute what the model computes is refused, not saved.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import Preprocess, normalize
from ..errors import AlexsuiteError, ConfigError, MissingExtra
from ..fileio import atomic_write_bytes, atomic_write_text, display_path
from ..settings import require, setting
from ..version import __version__
from .checkpoint import LoadedModel

FORMATS = ("onnx", "torchscript")
LAYERS = ("logits", "fc7")
INPUT_NAME = "images"
BATCH_AXIS = "batch"  # the name of the dynamic first axis in the ONNX graph and the sidecar
MIN_OPSET = 18  # torch's ONNX exporter writes opset 18 natively; lower ones need a conversion that can fail
# Parity: max |exported - PyTorch| must be at most TOLERANCE x max(1, max |PyTorch output|), i.e.
# absolute for outputs under 1, relative to the largest output above. Kernels of other runtimes
# sum in other orders (about 1e-6 relative on these nets); a wrong graph misses by far more.
TOLERANCE = 1e-4
PARITY_BATCH = 3  # not the batch traced with (2): the check also shows the batch axis is free
TRACE_BATCH = 2
INSTALL = "pip install 'alexsuite[export]' (or make setup)"


class ExportMismatchError(AlexsuiteError):
    """The exported file does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class ExportSettings:
    """How `alexsuite export` writes a model (always on the CPU, in eval mode)."""

    format: str = setting("onnx", "onnx (onnxruntime, TensorRT, OpenCV, ...) or torchscript (libtorch).")
    layer: str = setting(
        "logits", "What the file outputs: logits (N, classes) or fc7 features for image search.", "AlexNet §6.1"
    )
    opset: int = setting(MIN_OPSET, f"ONNX operator set version ({MIN_OPSET} or newer); torchscript ignores it.")

    def check(self) -> ExportSettings:
        require(self.format in FORMATS, f"--format {self.format!r}: choose one of {', '.join(FORMATS)}")
        require(self.layer in LAYERS, f"--layer {self.layer!r}: choose one of {', '.join(LAYERS)}")
        ok = isinstance(self.opset, int) and not isinstance(self.opset, bool) and self.opset >= MIN_OPSET
        require(ok, f"--opset {self.opset!r}: give {MIN_OPSET} or newer (what torch's ONNX exporter writes)")
        return self


class Served(nn.Module):
    """The model as a runtime sees it: 0-255 RGB crops in, its normalisation inside, `layer` out."""

    def __init__(self, model: nn.Module, pre: Preprocess, layer: str):
        super().__init__()
        self.model, self.layer = model, layer
        mean, std = torch.tensor(pre.mean).view(1, 3, 1, 1), torch.tensor(pre.std).view(1, 3, 1, 1)
        # the same x * scale + offset as transforms.normalize, so the graph needs no division
        self.register_buffer("scale", 1.0 / (255.0 * std))
        self.register_buffer("offset", -mean / std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images * self.scale + self.offset, self.layer)


def default_name(settings: ExportSettings) -> str:
    """model.onnx, model-fc7.onnx, model.torchscript.pt, model-fc7.torchscript.pt."""
    stem = "model" if settings.layer == "logits" else f"model-{settings.layer}"
    return stem + (".onnx" if settings.format == "onnx" else ".torchscript.pt")


def default_out_path(loaded: LoadedModel, settings: ExportSettings, out=None) -> Path:
    """Where to write: `out`, a folder's default_name when `out` is a folder, and beside the
    checkpoint (in its run directory) when `out` is not given."""
    if out is None:
        return loaded.source.parent / default_name(settings)
    out = Path(out).expanduser()
    return out / default_name(settings) if out.is_dir() else out


def sidecar_path(path) -> Path:
    """The JSON that describes an exported file: model.onnx -> model.onnx.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def export_model(loaded: LoadedModel, out_path, settings: ExportSettings = ExportSettings()) -> Path:
    """Write `loaded`'s model to `out_path` in `settings.format`, and its sidecar JSON beside it,
    once the file's outputs match PyTorch's; returns `out_path`. `loaded` is left as it was."""
    settings.check()
    out_path = _checked_out_path(Path(out_path), loaded.source)
    served = Served(copy.deepcopy(loaded.model).cpu().eval(), loaded.preprocess, settings.layer).eval()
    crop = loaded.preprocess.crop_size
    with torch.no_grad():
        example = torch.zeros(TRACE_BATCH, 3, crop, crop)
        data = _serialise(served, example, settings)
        images = torch.randint(0, 256, (PARITY_BATCH, 3, crop, crop), generator=torch.Generator().manual_seed(0))
        expected = served.model.features(normalize(images.to(torch.uint8), loaded.preprocess), settings.layer)
    got = _run_exported(data, settings.format, images.float())
    diff = check_parity(got, expected)
    atomic_write_bytes(out_path, lambda f: f.write(data))
    meta = describe(loaded, settings, out_path, tuple(expected.shape[1:]), data, diff)
    atomic_write_text(sidecar_path(out_path), json.dumps(meta, indent=2) + "\n")
    return out_path


def _checked_out_path(path: Path, source: Path) -> Path:
    """`path`, if a file can be written there without making folders or replacing the checkpoint."""
    shown = display_path(path)
    if path.is_dir():
        raise ConfigError(f"--out {shown}: is a folder; give a file name such as {shown}/model.onnx")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(
            f"--out {shown}: folder {display_path(parent)} does not exist; make it (mkdir -p) or give another --out"
        )
    if path.exists() and path.resolve() == source.resolve():
        raise ConfigError(f"--out {shown}: is the checkpoint being exported; give another file name")
    return path


def _require_modules(names: tuple[str, ...], what: str) -> None:
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, not installed here: {INSTALL}")


def _serialise(served: Served, example: torch.Tensor, settings: ExportSettings) -> bytes:
    return _onnx_bytes(served, example, settings) if settings.format == "onnx" else _torchscript_bytes(served, example)


def _onnx_bytes(served: Served, example: torch.Tensor, settings: ExportSettings) -> bytes:
    """torch.export's ONNX exporter (dynamo=True: the TorchScript-based one is deprecated), the
    batch axis left free; the whole model in one file (AlexNet is far under protobuf's 2 GB)."""
    _require_modules(("onnx", "onnxscript", "onnxruntime"), "--format onnx")
    import onnx

    newest = onnx.defs.onnx_opset_version()
    require(settings.opset <= newest, f"--opset {settings.opset}: the installed onnx knows up to {newest}")
    program = torch.onnx.export(
        served,
        (example,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[settings.layer],
        dynamic_shapes={"images": {0: torch.export.Dim(BATCH_AXIS)}},
        opset_version=settings.opset,
        verbose=False,
    )
    proto = program.model_proto
    written = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    if written != settings.opset:
        raise ConfigError(f"--opset {settings.opset}: torch's exporter wrote opset {written}; give {written}")
    return proto.SerializeToString()


def _torchscript_bytes(served: Served, example: torch.Tensor) -> bytes:
    """A traced module (the model has no data-dependent branches), saved by torch.jit.save."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # torch 2.14 deprecates torch.jit in favour of torch.export; TorchScript is what libtorch loads
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
        torch.jit.save(torch.jit.trace(served, example, check_trace=False), buffer)
    return buffer.getvalue()


def _run_exported(data: bytes, fmt: str, images: torch.Tensor) -> torch.Tensor:
    """The serialised file's outputs on `images`, read back from its bytes by its own runtime."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {INPUT_NAME: images.numpy()})[0])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
        return torch.jit.load(io.BytesIO(data), map_location="cpu")(images)


def check_parity(got: torch.Tensor, expected: torch.Tensor) -> float:
    """max |got - expected|, or ExportMismatchError when over TOLERANCE (see its comment)."""
    if got.shape != expected.shape:
        raise ExportMismatchError(f"exported output has shape {tuple(got.shape)}, PyTorch's {tuple(expected.shape)}")
    diff = float((got.float() - expected.float()).abs().max())
    limit = TOLERANCE * max(1.0, float(expected.abs().max()))
    if not diff <= limit:  # `not <=`: a nan difference fails too
        raise ExportMismatchError(
            f"exported outputs differ from PyTorch's by up to {diff:.3g} (allowed {limit:.3g}); nothing written"
        )
    return diff


def describe(loaded: LoadedModel, settings: ExportSettings, path: Path, out_dims: tuple, data: bytes, diff: float):
    """The sidecar: everything a runtime user needs besides the file itself."""
    pre = loaded.preprocess
    crop = pre.crop_size
    return {
        "file": path.name,
        "format": settings.format,
        **({"opset": settings.opset} if settings.format == "onnx" else {}),
        "sha256": hashlib.sha256(data).hexdigest(),
        "layer": settings.layer,
        "input": {"name": INPUT_NAME, "shape": [BATCH_AXIS, 3, crop, crop], "dtype": "float32"},
        "output": {"name": settings.layer, "shape": [BATCH_AXIS, *out_dims], "dtype": "float32"},
        "preprocess": preprocess_line(pre),
        "base_size": pre.base_size,
        "crop_size": crop,
        "mean": list(pre.mean),  # applied inside the graph; recorded, not to be applied again
        "std": list(pre.std),
        "classes": list(loaded.classes),
        "arch": loaded.arch,
        "fingerprint": loaded.fingerprint,
        "source": str(loaded.source),
        "parity": {"max_abs_diff": diff, "tolerance": TOLERANCE, "batch": PARITY_BATCH},
        "alexsuite_version": __version__,
        "torch_version": torch.__version__,
    }


def preprocess_line(pre: Preprocess) -> str:
    return (
        f"resize the shorter side to {pre.base_size} px (bilinear), centre-crop {pre.crop_size}x{pre.crop_size}, "
        "RGB (grey: repeat to 3 channels), float32 NCHW, values 0-255; mean/std normalisation is in the graph"
    )

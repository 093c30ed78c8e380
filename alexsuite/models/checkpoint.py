"""Checkpoints: atomic saves, weights-only loading, clear errors, and the one model loader
that every command (eval, index, detect) uses.

A checkpoint is a plain dict of tensors, numbers and strings, so `torch.load(weights_only=True)`
reads it and no pickle code ever runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.transforms import IMAGENET, Preprocess
from ..errors import CheckpointError
from ..fileio import atomic_write_bytes
from .alexnet import ACTIVATION, DROPOUT, AlexNet, create_model, load_torchvision_state_dict

FORMAT = "alexsuite-checkpoint/1"


def save_checkpoint(path: Path, payload: dict) -> None:
    atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, **payload}, f))


def resolve_checkpoint_path(path) -> Path:
    """A checkpoint file, or a run directory (its best.pt, else last.pt)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / name).is_file():
                return p / name
        raise CheckpointError(f"{p}: no best.pt or last.pt in this folder (is it a run directory?)")
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file or run directory")
    return p


def read_checkpoint(path) -> dict:
    p = resolve_checkpoint_path(path)
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated, foreign or pickled files
        text = str(e).strip()
        if "Weights only load failed" in text:
            # torch's own text goes on to suggest weights_only=False: exactly the unsafe load we refuse.
            why = "corrupt, not a checkpoint, or holding pickled objects that safe loading refuses"
        else:
            why = text.splitlines()[0][:200] if text else type(e).__name__
        raise CheckpointError(f"{p}: not a loadable weights-only checkpoint ({why})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{p}: expected a dict of weights, found {type(data).__name__}")
    return data


@dataclass
class LoadedModel:
    model: AlexNet
    preprocess: Preprocess
    classes: list[str]
    arch: str
    source: Path
    checkpoint: dict

    @property
    def fingerprint(self) -> str:
        """Stable id of these weights (an index refuses vectors from any other model)."""
        return weights_fingerprint(self.model)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of a model's parameters and buffers, by name (16 hex digits)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _is_torchvision_alexnet(state: dict) -> bool:
    return "features.0.weight" in state and "classifier.6.weight" in state


def load_model(path, device="cpu", expect_arch: str | None = None) -> LoadedModel:
    """Rebuild the model a checkpoint describes; also accepts torchvision's AlexNet state dict."""
    data = read_checkpoint(path)
    source = resolve_checkpoint_path(path)
    if data.get("format") == FORMAT:
        arch, classes, pre, model, state = _alexsuite_model(data, source)
    elif _is_torchvision_alexnet(data):
        arch, classes = "alexnet-tv", [f"imagenet-{i}" for i in range(data["classifier.6.weight"].shape[0])]
        pre = Preprocess(256, 224, IMAGENET["mean"], IMAGENET["std"], IMAGENET["eigval"], IMAGENET["eigvec"])
        model, state = create_model(arch, len(classes)), None
        try:
            load_torchvision_state_dict(model, data)
        except RuntimeError as e:
            raise CheckpointError(
                f"{source}: torchvision-style state dict does not fit AlexNet ({str(e)[:200]})"
            ) from None
    else:
        raise CheckpointError(f"{source}: not an alexsuite checkpoint nor torchvision AlexNet weights")
    if expect_arch and arch != expect_arch:
        raise CheckpointError(f"{source}: checkpoint is for --arch {arch}, not {expect_arch}")
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            raise CheckpointError(f"{source}: weights do not fit {arch} ({str(e).splitlines()[0][:200]})") from None
    model.eval().to(device)
    return LoadedModel(model, pre, classes, arch, source, data)


def _alexsuite_model(data: dict, source: Path):
    """(arch, classes, preprocessing, model, weights) of an alexsuite checkpoint, its fields
    checked: a file with a field missing or of the wrong kind is refused in one line."""
    try:
        arch, classes = data["arch"], data["classes"]
        if not isinstance(arch, str) or not isinstance(classes, list) or not classes:
            raise TypeError("arch or classes")
        if not all(isinstance(c, str) for c in classes):
            raise TypeError("class names")
        pre = Preprocess.from_dict(json.loads(data["preprocess"]))
        cfg = json.loads(data.get("config", "{}"))
        dropout, activation = cfg.get("dropout", DROPOUT), cfg.get("activation", ACTIVATION)
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1 and isinstance(activation, str)):
            raise TypeError("dropout or activation")
        if not isinstance(data["model"], dict):
            raise TypeError("model")
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{source}: a damaged alexsuite checkpoint ({type(e).__name__}: {e})") from None
    return arch, list(classes), pre, create_model(arch, len(classes), dropout, activation), data["model"]


def default_model() -> Path:
    """The model commands use when --model is not given: the newest `alexsuite train` run under
    runs/train/ (or an `alexsuite demo`'s runs/*/train/), else torchvision's AlexNet weights if
    torch's cache already holds them."""
    candidates = [*Path("runs/train").glob("*/"), *Path("runs").glob("*/train/")]
    runs = sorted(
        (p for p in candidates if (p / "best.pt").exists() or (p / "last.pt").exists()),
        key=lambda p: (p / "last.pt").stat().st_mtime if (p / "last.pt").exists() else p.stat().st_mtime,
    )
    if runs:
        return runs[-1]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if cached.exists():
        return cached
    raise CheckpointError(
        "no model to embed with: pass --model RUN_DIR|CHECKPOINT (train one with "
        "`alexsuite train`, or give torchvision's alexnet-owt-7be5be79.pth)"
    )

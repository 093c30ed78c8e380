"""A run directory: what an epoch writes (last.pt, best.pt, metrics.csv/json, curves.png,
conv1_filters.png) and how a run is resumed from it exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from .. import viz
from ..errors import CheckpointError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..models.checkpoint import read_checkpoint, save_checkpoint
from .config import TrainConfig

METRIC_FIELDS = [
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "val_loss",
    "val_top1",
    "val_top5",
    "seconds",
    "images_per_s",
    "skipped",
]


def next_run_dir(root: Path = Path("runs/train"), name: str = "exp") -> Path:
    """runs/train/exp, exp2, exp3, ... (the first that does not exist yet)."""
    i = 1
    while (root / (name if i == 1 else f"{name}{i}")).exists():
        i += 1
    return root / (name if i == 1 else f"{name}{i}")


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())
    atomic_write_text(run_dir / "metrics.json", json.dumps(history, indent=1))
    atomic_write_bytes(run_dir / "curves.png", lambda f: viz.training_curves(history, f))


def resume_checkpoint(path: Path) -> tuple[Path, dict]:
    """(last.pt path, its contents) for a run directory or checkpoint to continue."""
    path = Path(path)
    ckpt_path = path / "last.pt" if path.is_dir() else path
    state = read_checkpoint(ckpt_path)
    if "optimizer" not in state or "config" not in state:
        raise CheckpointError(
            f"{ckpt_path}: not a resumable alexsuite checkpoint (resume from a run "
            "directory or its last.pt; best.pt holds weights only)"
        )
    return ckpt_path, state


def saved_config(path: Path) -> TrainConfig:
    ckpt_path, state = resume_checkpoint(path)
    return TrainConfig.from_json(state["config"], f"{ckpt_path}: its config")


def restore(state: dict, model, optimizer, scheduler, scaler, ctx, device, source="last.pt"):
    """Put a resumed run back exactly where last.pt left it; returns (next epoch, best,
    history). A damaged last.pt is refused in one line, before the run goes on."""
    try:
        return _restore(state, model, optimizer, scheduler, scaler, ctx, device)
    except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else ""
        raise CheckpointError(
            f"{source}: cannot resume from it, it is damaged ({type(e).__name__}: {first}); start a new run"
        ) from None


def _restore(state: dict, model, optimizer, scheduler, scaler, ctx, device) -> tuple[int, float, list]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"][ctx.rank] if ctx.rank < len(state["rng"]) else state["rng"][0]
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    history = json.loads(state["history"])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise TypeError("history is not a list of epochs")
    return int(state["epoch"]) + 1, float(state["best_top1"]), history


def rng_states(ctx, device) -> list[dict]:
    """Every rank's RNG state (dropout masks differ per rank), gathered for rank 0 to save."""
    mine = {
        "cpu": torch.get_rng_state(),
        **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
    }
    if not ctx.enabled:
        return [mine]
    gathered = [None] * ctx.world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def save_epoch(run_dir: Path, payload: dict, improved: bool, history: list[dict]) -> None:
    save_checkpoint(run_dir / "last.pt", payload)
    if improved:  # best.pt carries weights only: small, and enough for eval/index/detect
        save_checkpoint(
            run_dir / "best.pt",
            {k: v for k, v in payload.items() if k not in ("optimizer", "scheduler", "rng", "scaler")},
        )
    write_metrics(run_dir, history)

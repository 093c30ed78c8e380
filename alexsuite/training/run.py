"""A training run from a TrainConfig, as a list of named stages: start (or resume), load the
data, build the model and optimiser, then train, validate and save each epoch into the run
directory (rundir.py). The same code runs alone or as one torchrun (DDP) process."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .. import distributed, viz
from ..devices import resolve_device
from ..errors import ConfigError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..models.alexnet import count_parameters
from ..reporting import NoProgress, Reporter
from . import rundir, speed
from .config import TrainConfig
from .engine import TrainingParts, train_one_epoch
from .evaluate import evaluate
from .setup import TrainingData, build_parts, load_data


@dataclass
class RunResult:
    run_dir: Path
    best_top1: float
    history: list[dict]


@dataclass
class _Progress:
    """Where a run stands: the next epoch, the best validation top-1 so far, every epoch's row."""

    epoch: int = 0
    best: float = -1.0
    history: list = field(default_factory=list)


@dataclass
class _Run:
    """What every stage after set-up shares."""

    cfg: TrainConfig
    run_dir: Path
    data: TrainingData
    parts: TrainingParts
    progress: _Progress
    reporter: Reporter


def train(
    cfg: TrainConfig, run_dir: Path | None = None, resume: Path | None = None, reporter: Reporter = Reporter()
) -> RunResult:
    """Train (or resume) a run; returns where it is and how it went."""
    cfg, run_dir, state = _start_or_resume(cfg, run_dir, resume)
    ctx, device = distributed.init_from_env(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed + ctx.rank)  # dropout masks; augmentation has its own keyed RNG
    data = load_data(cfg, state, ctx, device)
    parts = build_parts(cfg, data, state, ctx, device)
    progress = _Progress()
    if state:
        progress = _Progress(
            *rundir.restore(
                state, parts.raw_model, parts.optimizer, parts.scheduler, parts.scaler, ctx, device, run_dir / "last.pt"
            )
        )
    run = _Run(cfg, run_dir, data, parts, progress, reporter)
    if ctx.is_main:
        _open_run_dir(run)
    for epoch in range(progress.epoch, cfg.epochs):
        _epoch(run, epoch)
    distributed.shutdown()
    return RunResult(run_dir, progress.best, progress.history)


def _start_or_resume(cfg: TrainConfig, run_dir, resume) -> tuple[TrainConfig, Path, dict | None]:
    """The configuration to run, its directory, and last.pt's contents when resuming (the
    saved settings are kept; only what does not change the result may differ)."""
    state = None
    if resume is not None:
        ckpt_path, state = rundir.resume_checkpoint(resume)
        saved = TrainConfig.from_json(state["config"], f"{ckpt_path}: its config")
        if saved.schedule != "plateau" and cfg.epochs != saved.epochs:
            raise ConfigError(
                f"a {saved.schedule} run is planned over its {saved.epochs} epochs; resume it without changing --epochs"
            )
        saved.epochs, saved.device, saved.workers, saved.compile = cfg.epochs, cfg.device, cfg.workers, cfg.compile
        cfg, run_dir = saved, ckpt_path.parent
    else:  # a resume reads these from wherever it is started
        if cfg.paste_on:
            cfg = replace(cfg, paste_on=str(Path(cfg.paste_on).resolve()))
        if cfg.leave_out:
            cfg = replace(cfg, leave_out=str(Path(cfg.leave_out).resolve()))
    cfg.validate()
    run_dir = Path(run_dir) if run_dir else rundir.next_run_dir()
    if state is None and any((run_dir / name).exists() for name in ("last.pt", "best.pt")):
        raise ConfigError(
            f"--out {run_dir} already holds a run: continue it with --resume {run_dir}, or give a new --out"
        )
    return cfg, run_dir, state


def _open_run_dir(run: _Run) -> None:
    """Rank 0 writes config.json and preprocess.json and says what is about to run."""
    cfg, run_dir, data, parts, reporter = run.cfg, run.run_dir, run.data, run.parts, run.reporter
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.json", cfg.to_json())
    atomic_write_text(run_dir / "preprocess.json", json.dumps(parts.pre.to_dict(), indent=2))
    skipped = getattr(data.train, "skipped_files", []) + getattr(data.val, "skipped_files", [])
    if skipped:
        reporter.warn(f"ignored {len(skipped)} file(s) that are not images or cannot be read, e.g. {skipped[0]}")
    computes_in, warning = speed.precision(cfg.amp, parts.device)
    for message in filter(None, (warning, parts.compile_warning)):
        reporter.warn(message)
    reporter.start(
        {
            "run_dir": str(run_dir),
            "arch": cfg.arch,
            "parameters": count_parameters(parts.raw_model),
            "train": len(data.train),
            "val": len(data.val),
            "classes": len(data.train.classes),
            "device": str(parts.device),
            "precision": computes_in,
            "compiled": parts.compiled,
            "world": parts.ctx.world,
            "start_epoch": run.progress.epoch,
            "epochs": cfg.epochs,
        }
    )


def _epoch(run: _Run, epoch: int) -> None:
    """Train one epoch, validate (every --val-every epochs and the last), step the plateau
    schedule, save (rank 0) and report."""
    cfg, data, parts, progress, reporter = run.cfg, run.data, run.parts, run.progress, run.reporter
    ctx = parts.ctx
    bar = (
        reporter.progress(parts.steps_per_epoch * cfg.batch_size // ctx.world, f"epoch {epoch + 1}/{cfg.epochs}")
        if ctx.is_main
        else NoProgress()
    )
    lr = parts.optimizer.param_groups[0]["lr"]
    with closing(bar):
        stats = train_one_epoch(parts, data.train, cfg, epoch, on_batch=bar)
    val = _validate(run) if _validates(cfg, epoch) else _NOT_VALIDATED
    if parts.epoch_scheduler is not None:
        parts.epoch_scheduler.step(val["top1"])
    row = {
        "epoch": epoch + 1,
        "lr": lr,
        "train_loss": stats["loss"],
        "train_top1": stats["top1"],
        "val_loss": val["loss"],
        "val_top1": val["top1"],
        "val_top5": val["top5"],
        "seconds": stats["seconds"],
        "images_per_s": stats["images_per_s"],
        "skipped": stats["skipped"] + val["skipped"],
    }
    progress.history.append(row)
    improved = val["top1"] is not None and val["top1"] > progress.best
    progress.best = max(progress.best, val["top1"]) if improved else progress.best
    rng = rundir.rng_states(ctx, parts.device)  # a collective: every rank takes part
    if ctx.is_main:
        _save(run, epoch, rng, improved)
        if row["skipped"]:
            examples = stats["skipped_examples"] + val["skipped_examples"]  # this rank's only
            reporter.warn(
                f"epoch {epoch + 1}: skipped {row['skipped']} unreadable image(s)"
                + (f", e.g. {examples[0]}" if examples else "")
                + " (use --strict to stop instead)"
            )
        reporter.epoch(row)
    ctx.barrier()


# An epoch that --val-every skips: its row's validation columns stay empty.
_NOT_VALIDATED = {"loss": None, "top1": None, "top5": None, "skipped": 0, "skipped_examples": []}


def _validates(cfg: TrainConfig, epoch: int) -> bool:
    return (epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs


def _validate(run: _Run) -> dict:
    parts = run.parts
    return evaluate(
        parts.raw_model,
        run.data.val,
        parts.pre,
        parts.device,
        batch_size=run.cfg.eval_batch_size,
        workers=run.cfg.workers,
        ctx=parts.ctx,
        strict=run.cfg.strict,
    )


def _save(run: _Run, epoch: int, rng: list, improved: bool) -> None:
    """last.pt (resumable), best.pt when validation improved, the metrics and pictures."""
    cfg, data, parts, progress = run.cfg, run.data, run.parts, run.progress
    payload = {
        "arch": cfg.arch,
        "classes": list(data.train.classes),
        "preprocess": json.dumps(parts.pre.to_dict()),
        "config": cfg.to_json(),
        "model": {k: v.contiguous() for k, v in parts.raw_model.state_dict().items()},  # NCHW, whatever trained
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "epoch": epoch,
        "best_top1": progress.best,
        "history": json.dumps(progress.history),
        "rng": rng,
        **({"scaler": parts.scaler.state_dict()} if parts.scaler is not None else {}),
        **data.fingerprints,
    }
    rundir.save_epoch(run.run_dir, payload, improved, progress.history)
    atomic_write_bytes(
        run.run_dir / "conv1_filters.png",
        lambda f: viz.filter_grid(parts.raw_model.body[0].weight, f, grayscale=data.grayscale),
    )

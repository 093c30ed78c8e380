"""A training run: data, model, optimiser and schedule from a TrainConfig, the epoch loop, and a
run directory holding config.json, last.pt/best.pt, metrics.csv/json, curves.png and
conv1_filters.png. The same code runs alone or as one torchrun (DDP) process."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from .. import viz
from ..data import transforms
from ..data.datasets import ArrayDataset, leave_out, resolve_classification
from ..data.decode import load_square
from ..devices import resolve_device
from ..errors import CheckpointError, ConfigError, DataError, ImageDecodeError
from ..evaluation.classification import evaluate
from ..fileio import atomic_write_bytes, atomic_write_text, file_sha256
from ..models.alexnet import count_parameters, create_model, load_torchvision_state_dict
from . import distributed
from .checkpoint import read_checkpoint, save_checkpoint
from .config import TrainConfig
from .engine import train_one_epoch

METRIC_FIELDS = ["epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
                 "seconds", "images_per_s", "skipped"]


class Reporter:
    """What a run tells its caller; the CLI's subclass prints, the default stays silent."""

    def start(self, info: dict) -> None: ...
    def progress(self, total: int, desc: str):  # returns a callable(n, loss=None) and a close()
        return _NoProgress()
    def epoch(self, row: dict) -> None: ...
    def warn(self, message: str) -> None: ...
    def note(self, message: str) -> None: ...   # one line of news (a stage starting, a file written)

    def stage(self, message: str) -> None:      # a pipeline's stage starting or done (the demo's)
        self.note(message)


class _NoProgress:
    def __call__(self, n, loss=None): ...
    def close(self): ...


@dataclass
class RunResult:
    run_dir: Path
    best_top1: float
    history: list[dict]


def next_run_dir(root: Path = Path("runs/train"), name: str = "exp") -> Path:
    """runs/train/exp, exp2, exp3, ... (the first that does not exist yet)."""
    i = 1
    while (root / (name if i == 1 else f"{name}{i}")).exists():
        i += 1
    return root / (name if i == 1 else f"{name}{i}")


PASTED_SAMPLE = 2048   # images pasted to estimate a --paste-on run's statistics (~2M pixels at 32 px)


def _preprocess_for(cfg: TrainConfig, train, backgrounds: torch.Tensor | None = None) -> transforms.Preprocess:
    """Mean/std and RGB PCA of the training images (paper 4.1); ImageNet's for torchvision weights.
    With --paste-on the network sees pasted images, so their statistics are those of a pasted
    sample: the objects-on-black alone would give grey statistics and a PCA lighting that only
    changes brightness."""
    if cfg.weights or cfg.pretrained:
        stats = transforms.IMAGENET
    elif backgrounds is not None:
        stats = transforms.pixel_statistics(_pasted_sample(cfg, train, backgrounds), seed=cfg.seed)
    elif isinstance(train, ArrayDataset):
        stats = transforms.pixel_statistics(train.images, seed=cfg.seed)
    else:  # a few hundred decoded images estimate the statistics of a folder well
        stats = transforms.pixel_statistics(_decoded_sample(train, 64, cfg.seed), seed=cfg.seed)
    return transforms.Preprocess(cfg.base_size, cfg.crop_size, **stats)


def _decoded_sample(train, size: int, seed: int, count: int = 256) -> torch.Tensor:
    """`count` random images of a folder dataset, decoded to size x size (undecodable ones skipped)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=g)[:count].tolist()
    arrays = []
    for i in pick:
        try:
            arrays.append(torch.tensor(load_square(train.paths[i], size)).permute(2, 0, 1))
        except ImageDecodeError:
            continue
    if not arrays:
        raise DataError(f"{train.source}: none of {len(pick)} sampled images could be decoded")
    return torch.stack(arrays)


def _pasted_sample(cfg: TrainConfig, train, backgrounds: torch.Tensor) -> torch.Tensor:
    """Training images pasted onto the run's backgrounds as training pastes them (paste.py)."""
    from ..data.paste import paste, paste_params
    if isinstance(train, ArrayDataset):
        g = torch.Generator().manual_seed(cfg.seed)
        images = train.images[torch.randperm(len(train), generator=g)[:PASTED_SAMPLE]]
    else:
        images = _decoded_sample(train, cfg.base_size, cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    bank = backgrounds.cpu()
    return paste(images, bank, paste_params(len(images), len(bank), g))


def _build_model(cfg: TrainConfig, num_classes: int):
    model = create_model(cfg.arch, num_classes, cfg.dropout, cfg.activation)
    if cfg.weights or cfg.pretrained:
        if cfg.weights:
            state = read_checkpoint(cfg.weights)
            state = state.get("model", state)
        else:
            try:
                from torchvision.models import AlexNet_Weights, alexnet
                state = alexnet(weights=AlexNet_Weights.IMAGENET1K_V1).state_dict()
            except Exception as e:
                raise DataError(
                    f"--pretrained needs torchvision's download, which failed ({str(e).splitlines()[0][:120]}). "
                    "Fix: download alexnet-owt-7be5be79.pth elsewhere and pass --weights FILE") from None
        head = {k: v for k, v in state.items() if k.startswith("classifier.6.")}
        if head and head["classifier.6.weight"].shape[0] != num_classes:
            # Keep the ImageNet features, start a fresh fc8 for this dataset's classes.
            fresh = model.classifier[6].state_dict()
            state = {**state, "classifier.6.weight": fresh["weight"], "classifier.6.bias": fresh["bias"]}
        try:
            load_torchvision_state_dict(model, state)
        except RuntimeError as e:
            raise CheckpointError(f"{cfg.weights or 'pretrained'}: not torchvision AlexNet weights "
                                  f"({str(e).splitlines()[0][:160]})") from None
    return model


def _scheduler(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """(per-epoch scheduler, per-step scheduler): exactly one of them is set."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        # Paper Section 5: lr divided by 10 when the validation error stopped improving.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=cfg.plateau_patience), None
    if cfg.schedule == "cosine":
        return None, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    # cycle_momentum=False: keep the paper's momentum 0.9 rather than OneCycle's 0.85-0.95 cycle.
    return None, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total,
                                                     cycle_momentum=False)


def _write_metrics(run_dir: Path, history: list[dict]) -> None:
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
        raise CheckpointError(f"{ckpt_path}: not a resumable alexsuite checkpoint (resume from a run "
                              "directory or its last.pt; best.pt holds weights only)")
    return ckpt_path, state


def saved_config(path: Path) -> TrainConfig:
    return TrainConfig.from_json(resume_checkpoint(path)[1]["config"])


def _restore(state: dict, model, optimizer, scheduler, scaler, ctx, device) -> tuple[int, float, list]:
    """Put a resumed run back exactly where last.pt left it; returns (next epoch, best, history)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng = state["rng"][ctx.rank] if ctx.rank < len(state["rng"]) else state["rng"][0]
    torch.set_rng_state(rng["cpu"])
    if device.type == "cuda" and "cuda" in rng:
        torch.cuda.set_rng_state(rng["cuda"], device)
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    return int(state["epoch"]) + 1, float(state["best_top1"]), json.loads(state["history"])


def _rng_states(ctx, device) -> list[dict]:
    """Every rank's RNG state (dropout masks differ per rank), gathered for rank 0 to save."""
    mine = {"cpu": torch.get_rng_state(),
            **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})}
    if not ctx.enabled:
        return [mine]
    gathered = [None] * ctx.world
    torch.distributed.all_gather_object(gathered, mine)
    return gathered


def _save_epoch(run_dir: Path, payload: dict, improved: bool, history: list[dict]) -> None:
    save_checkpoint(run_dir / "last.pt", payload)
    if improved:  # best.pt carries weights only: small, and enough for eval/index/detect
        save_checkpoint(run_dir / "best.pt", {k: v for k, v in payload.items()
                                              if k not in ("optimizer", "scheduler", "rng", "scaler")})
    _write_metrics(run_dir, history)


def train(cfg: TrainConfig, run_dir: Path | None = None, resume: Path | None = None,
          reporter: Reporter = Reporter()) -> RunResult:
    """Train (or resume) a run; returns where it is and how it went."""
    state = None
    if resume is not None:
        ckpt_path, state = resume_checkpoint(resume)
        saved = TrainConfig.from_json(state["config"])
        if saved.schedule != "plateau" and cfg.epochs != saved.epochs:
            raise ConfigError(f"a {saved.schedule} run is planned over its {saved.epochs} epochs; "
                              "resume it without changing --epochs")
        # Only what does not change the result may differ on resume: length, device, workers.
        saved.epochs, saved.device, saved.workers = cfg.epochs, cfg.device, cfg.workers
        cfg, run_dir = saved, ckpt_path.parent
    else:   # a resume reads these from wherever it is started
        if cfg.paste_on:
            cfg = replace(cfg, paste_on=str(Path(cfg.paste_on).resolve()))
        if cfg.leave_out:
            cfg = replace(cfg, leave_out=str(Path(cfg.leave_out).resolve()))
    cfg.validate()
    run_dir = Path(run_dir) if run_dir else next_run_dir()

    device = resolve_device(cfg.device)
    ctx, device = distributed.init_from_env(device)
    torch.manual_seed(cfg.seed + ctx.rank)  # dropout masks; augmentation has its own keyed RNG

    train_set, val_set = resolve_classification(cfg.data, cfg.base_size, cfg.val_split, cfg.seed)
    left_out = None
    if cfg.leave_out:
        train_set = leave_out(train_set, cfg.leave_out)
        left_out = file_sha256(cfg.leave_out)
        if state and state.get("leave_out_sha256", left_out) != left_out:
            raise ConfigError(f"--leave-out {cfg.leave_out}: the list changed since this run began; put it "
                              "back to resume, or start a new run")
    if cfg.batch_size % ctx.world:
        raise ConfigError(f"--batch-size {cfg.batch_size} is the global batch: make it a multiple of "
                          f"the {ctx.world} processes")
    backgrounds = paste_photos = None   # made before the run directory: a bad --paste-on leaves nothing
    if cfg.paste_on:
        from ..data.paste import background_bank, photos_fingerprint
        paste_photos = photos_fingerprint(cfg.paste_on)
        if state and state.get("paste_photos", paste_photos) != paste_photos:
            raise ConfigError(f"--paste-on {cfg.paste_on}: its photos changed since this run began; put "
                              "those photos back to resume, or start a new run")
        backgrounds = background_bank(cfg.paste_on, cfg.base_size, seed=cfg.seed).to(device)
    pre = (transforms.Preprocess.from_dict(json.loads(state["preprocess"])) if state
           else _preprocess_for(cfg, train_set, backgrounds))
    model = (create_model(cfg.arch, len(train_set.classes), cfg.dropout, cfg.activation) if state
             else _build_model(cfg, len(train_set.classes))).to(device)  # resume: weights come from last.pt
    raw_model = model
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_set) // cfg.batch_size)
    epoch_sched, step_sched = _scheduler(cfg, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None

    start_epoch, best, history = 0, -1.0, []
    if state:
        start_epoch, best, history = _restore(state, raw_model, optimizer, epoch_sched or step_sched,
                                              scaler, ctx, device)
    if ctx.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", cfg.to_json())
        atomic_write_text(run_dir / "preprocess.json", json.dumps(pre.to_dict(), indent=2))
    skipped_scan = getattr(train_set, "skipped_files", []) + getattr(val_set, "skipped_files", [])
    if skipped_scan and ctx.is_main:
        reporter.warn(f"ignored {len(skipped_scan)} non-image file(s), e.g. {skipped_scan[0]}")
    if ctx.is_main:
        reporter.start({"run_dir": str(run_dir), "arch": cfg.arch, "parameters": count_parameters(raw_model),
                        "train": len(train_set), "val": len(val_set), "classes": len(train_set.classes),
                        "device": str(device), "world": ctx.world, "start_epoch": start_epoch,
                        "epochs": cfg.epochs})

    grayscale = isinstance(train_set, ArrayDataset) and train_set.images.shape[1] == 1 and not cfg.paste_on
    for epoch in range(start_epoch, cfg.epochs):
        bar = reporter.progress(steps_per_epoch * cfg.batch_size // ctx.world if ctx.is_main else 0,
                                f"epoch {epoch + 1}/{cfg.epochs}") if ctx.is_main else _NoProgress()
        lr = optimizer.param_groups[0]["lr"]
        stats = train_one_epoch(model, train_set, pre, optimizer, epoch=epoch, batch_size=cfg.batch_size,
                                seed=cfg.seed, device=device, ctx=ctx, workers=cfg.workers,
                                pca=cfg.pca_lighting, amp=cfg.amp, scaler=scaler,
                                step_scheduler=step_sched, strict=cfg.strict, on_batch=bar,
                                backgrounds=backgrounds)
        bar.close()
        val = evaluate(raw_model, val_set, pre, device, batch_size=cfg.eval_batch_size,
                       workers=cfg.workers, ctx=ctx, strict=cfg.strict)
        if epoch_sched is not None:
            epoch_sched.step(val["top1"])
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": stats["loss"], "train_top1": stats["top1"],
               "val_loss": val["loss"], "val_top1": val["top1"], "val_top5": val["top5"],
               "seconds": stats["seconds"], "images_per_s": stats["images_per_s"],
               "skipped": stats["skipped"] + val["skipped"]}
        history.append(row)
        improved = val["top1"] > best
        best = max(best, val["top1"])
        rng = _rng_states(ctx, device)  # a collective: every rank takes part
        if ctx.is_main:
            payload = {"arch": cfg.arch, "classes": list(train_set.classes),
                       "preprocess": json.dumps(pre.to_dict()), "config": cfg.to_json(),
                       "model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": (epoch_sched or step_sched).state_dict(), "epoch": epoch,
                       "best_top1": best, "history": json.dumps(history), "rng": rng,
                       **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                       **({"paste_photos": paste_photos} if paste_photos else {}),
                       **({"leave_out_sha256": left_out} if left_out else {})}
            _save_epoch(run_dir, payload, improved, history)
            atomic_write_bytes(run_dir / "conv1_filters.png",
                               lambda f: viz.filter_grid(raw_model.body[0].weight, f, grayscale=grayscale))
            if row["skipped"]:
                examples = stats["skipped_examples"] + val["skipped_examples"]  # this rank's only
                reporter.warn(f"epoch {epoch + 1}: skipped {row['skipped']} unreadable image(s)"
                              + (f", e.g. {examples[0]}" if examples else "") + " (use --strict to stop instead)")
            reporter.epoch(row)
        ctx.barrier()
    distributed.shutdown()
    return RunResult(run_dir, best, history)

"""One training epoch, the same for a single process and for each torchrun (DDP) process."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data import batching, transforms
from ..data.paste import paste, paste_params
from ..distributed import DistContext
from ..errors import TrainingDiverged
from ..evaluation.classification import topk_correct
from . import speed


def autocast_for(device: torch.device, enabled: bool):
    """--amp: fp16 on CUDA (with a GradScaler), bf16 on CPU; off means plain fp32."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


@dataclass
class TrainingParts:
    """What every epoch of a run uses, built once (setup.build_parts)."""

    model: torch.nn.Module  # DDP-wrapped under torchrun
    raw_model: torch.nn.Module  # the model itself: what is saved and evaluated
    optimizer: torch.optim.Optimizer
    pre: transforms.Preprocess
    device: torch.device
    ctx: DistContext
    epoch_scheduler: object | None  # exactly one of the two schedulers is set
    step_scheduler: object | None
    scaler: object | None  # CUDA --amp's GradScaler
    backgrounds: torch.Tensor | None  # --paste-on's bank: each image is pasted onto one of them first
    steps_per_epoch: int
    compiled: str = "off"  # what --compile chose for this run (speed.compile_mode)
    compile_warning: str | None = None  # why it fell back to eager, said once at the start

    @property
    def scheduler(self):
        return self.epoch_scheduler or self.step_scheduler

    @classmethod
    def plain(cls, model, optimizer, pre: transforms.Preprocess, device="cpu") -> TrainingParts:
        """One process, no schedule, no paste: a bare loop over `model` (benchmarks, tests)."""
        return cls(model, model, optimizer, pre, torch.device(device), DistContext(), None, None, None, None, 0)


def train_one_epoch(parts: TrainingParts, dataset, cfg, epoch: int, on_batch=None) -> dict:
    """Train over one epoch's global batches (each rank its slice); returns summed statistics.
    `cfg`: the run's TrainConfig (batch size, seed, workers, augmentation, --amp, --strict)."""
    parts.model.train()
    ctx = parts.ctx
    plan = batching.epoch_batches(len(dataset), cfg.batch_size, epoch, cfg.seed)
    totals = {"n": 0, "correct": 0, "loss": 0.0}
    skipped = []
    start = time.perf_counter()
    for batch in batching.iterate(dataset, plan, ctx.rank, ctx.world, cfg.workers, cfg.strict):
        skipped += batch.failures
        if len(batch.labels) == 0 and not ctx.enabled:
            continue  # every file of this batch failed to decode
        images, labels = _batch_input(parts, batch, cfg, epoch, len(plan[batch.step]))
        _step(parts, images, labels, cfg.amp, totals, on_batch, where=(epoch, batch.step))
    seconds = time.perf_counter() - start
    n, c1, loss_sum, n_skipped = ctx.all_sum([totals["n"], totals["correct"], totals["loss"], len(skipped)])
    return {
        "loss": loss_sum / max(n, 1),
        "top1": c1 / max(n, 1),
        "images": int(n),
        "seconds": seconds,
        "images_per_s": n / seconds if seconds else 0.0,
        "skipped": int(n_skipped),
        "skipped_examples": [str(e) for e in skipped[:3]],
    }


def _batch_input(parts: TrainingParts, batch, cfg, epoch: int, global_size: int):
    """The batch's augmented network input and labels on the training device."""
    pre, device = parts.pre, parts.device
    bank = 0 if parts.backgrounds is None else len(parts.backgrounds)
    params = augment_slice(global_size, pre, cfg.seed, epoch, batch.step, parts.ctx, batch, bank)
    images = batch.images.to(device, non_blocking=True)
    if parts.backgrounds is not None and len(batch.labels):
        images = paste(images, parts.backgrounds, params)
    images = (
        transforms.augment(images, pre, params, cfg.pca_lighting)
        if len(batch.labels)
        else torch.zeros(0, 3, pre.crop_size, pre.crop_size, device=device)
    )
    return speed.batch_format(images, cfg.channels_last), batch.labels.to(device, non_blocking=True)


def _step(parts: TrainingParts, images, labels, amp: bool, totals: dict, on_batch, where) -> None:
    """One SGD step on this rank's share of a global batch, added to `totals`; `where`:
    (epoch, step), named if the loss stops being finite."""
    ctx = parts.ctx
    with autocast_for(parts.device, amp):
        logits = parts.model(images)
        loss = F.cross_entropy(logits, labels, reduction="sum")
    # DDP averages gradients over ranks; scaling each rank's summed loss by world / global
    # count makes that average the mean over the global batch even when ranks hold
    # different numbers of samples (files that failed to decode), and an empty rank still
    # joins the gradient all-reduce instead of leaving the others waiting. Every rank learns
    # in the same call whether any rank's loss stopped being finite, so all stop together.
    global_n, diverged = ctx.all_sum([float(len(labels)), float(not torch.isfinite(loss.detach()))])
    if diverged:
        _diverged(parts, float(loss.detach()), *where)
    if global_n == 0:
        return
    loss = loss * (ctx.world / global_n)
    parts.optimizer.zero_grad(set_to_none=True)
    if parts.scaler is not None:
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
    else:
        loss.backward()
        parts.optimizer.step()
    if parts.step_scheduler is not None:
        parts.step_scheduler.step()
    if len(labels) == 0:
        return
    totals["loss"] += float(loss.detach()) * global_n / ctx.world
    totals["correct"] += topk_correct(logits.detach().float(), labels, ks=(1,))[0]
    totals["n"] += len(labels)
    if on_batch:
        on_batch(len(labels), float(loss.detach()) * global_n / ctx.world / len(labels))


def _diverged(parts: TrainingParts, loss: float, epoch: int, step: int):
    """Stop as torchvision's reference scripts do: a non-finite loss ruins every later step."""
    lr = parts.optimizer.param_groups[0]["lr"]
    raise TrainingDiverged(
        f"the training loss became {loss} at epoch {epoch + 1}, step {step + 1} (lr {lr:g}); training stopped "
        "and nothing of this epoch was saved: lower --lr, or check the data (`--resume` continues from the last "
        "saved epoch)"
    )


def augment_slice(
    global_size: int, pre, seed: int, epoch: int, step: int, ctx: DistContext, batch, paste_bank: int = 0
) -> dict:
    """This rank's share of the global batch's random draws: crops, flips and lighting, then
    (paste_bank > 0) the copy-paste draws over a bank of that many backgrounds, all from the
    batch's keyed generator. When files failed to decode the batch is shorter: it uses the
    first draws of the share."""
    g = transforms.batch_generator(seed, epoch, step)
    params = transforms.augment_params(global_size, pre, g)
    if paste_bank:
        params.update(paste_params(global_size, paste_bank, g))
    params = {k: v[ctx.rank :: ctx.world] for k, v in params.items()}
    if batch.failures:
        params = {k: v[: len(batch.labels)] for k, v in params.items()}
    return params

"""One training epoch, the same for a single process and for each torchrun (DDP) process."""
from __future__ import annotations

import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from ..data import batching, transforms
from ..data.paste import paste
from ..evaluation.classification import topk_correct
from .distributed import DistContext


def autocast_for(device: torch.device, enabled: bool):
    """--amp: fp16 on CUDA (with a GradScaler), bf16 on CPU; off means plain fp32."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)


def train_one_epoch(model, dataset, pre: transforms.Preprocess, optimizer, *, epoch: int,
                    batch_size: int, seed: int, device: torch.device, ctx: DistContext = DistContext(),
                    workers: int = 0, pca: bool = True, amp: bool = False, scaler=None,
                    step_scheduler=None, strict: bool = False, on_batch=None,
                    backgrounds: torch.Tensor | None = None) -> dict:
    """Train over one epoch's global batches (each rank its slice); returns summed statistics.
    `backgrounds`: a paste.background_bank; each image is pasted onto one of them first."""
    model.train()
    plan = batching.epoch_batches(len(dataset), batch_size, epoch, seed)
    n = c1 = 0
    loss_sum = 0.0
    skipped = []
    start = time.perf_counter()
    for batch in batching.iterate(dataset, plan, ctx.rank, ctx.world, workers, strict):
        skipped += batch.failures
        if len(batch.labels) == 0 and not ctx.enabled:
            continue  # every file of this batch failed to decode
        params = augment_slice(len(plan[batch.step]), pre, seed, epoch, batch.step, ctx, batch,
                               0 if backgrounds is None else len(backgrounds))
        images = batch.images.to(device, non_blocking=True)
        if backgrounds is not None and len(batch.labels):
            images = paste(images, backgrounds, params)
        images = (transforms.augment(images, pre, params, pca)
                  if len(batch.labels) else torch.zeros(0, 3, pre.crop_size, pre.crop_size, device=device))
        labels = batch.labels.to(device, non_blocking=True)
        with autocast_for(device, amp):
            logits = model(images)
            loss = F.cross_entropy(logits, labels, reduction="sum")
        # DDP averages gradients over ranks; scaling each rank's summed loss by world / global
        # count makes that average the mean over the global batch even when ranks hold
        # different numbers of samples (files that failed to decode), and an empty rank still
        # joins the gradient all-reduce instead of leaving the others waiting.
        global_n = ctx.all_sum([float(len(labels))])[0]
        if global_n == 0:
            continue
        loss = loss * (ctx.world / global_n)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if step_scheduler is not None:
            step_scheduler.step()
        if len(labels) == 0:
            continue
        loss_sum += float(loss.detach()) * global_n / ctx.world
        c1 += topk_correct(logits.detach().float(), labels, ks=(1,))[0]
        n += len(labels)
        if on_batch:
            on_batch(len(labels), float(loss.detach()) * global_n / ctx.world / len(labels))
    seconds = time.perf_counter() - start
    n, c1, loss_sum, n_skipped = ctx.all_sum([n, c1, loss_sum, len(skipped)])
    return {"loss": loss_sum / max(n, 1), "top1": c1 / max(n, 1), "images": int(n),
            "seconds": seconds, "images_per_s": n / seconds if seconds else 0.0,
            "skipped": int(n_skipped), "skipped_examples": [str(e) for e in skipped[:3]]}


def augment_slice(global_size: int, pre, seed: int, epoch: int, step: int, ctx: DistContext, batch,
                  paste_bank: int = 0) -> dict:
    """This rank's share of the global batch's random draws (see transforms.augment_params).
    When files failed to decode the batch is shorter: it uses the first draws of the share."""
    params = {k: v[ctx.rank::ctx.world] for k, v in
              transforms.augment_params(global_size, pre, seed, epoch, step, paste_bank).items()}
    if batch.failures:
        params = {k: v[:len(batch.labels)] for k, v in params.items()}
    return params

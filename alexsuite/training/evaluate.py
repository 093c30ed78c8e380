"""Scoring a classifier on labelled images: top-1 / top-5 with the centre crop or the paper's
ten-crop averaging (AlexNet §4.1; docs/references.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data import batching, transforms
from ..data.datasets import DEFAULT_DATASET, resolve_classification, resolve_eval
from ..distributed import DistContext
from ..errors import DataError
from ..evaluation.classification import topk_correct
from ..settings import default_of, setting


@dataclass(frozen=True)
class EvalSettings:
    """How `alexsuite eval` scores a model."""

    data: str = setting(DEFAULT_DATASET, "A dataset name (its test split) or a folder of class folders.")
    split: str | None = setting(None, "Folder data: evaluate DATA/SPLIT (default: DATA/val if present, else DATA).")
    ten_crop: bool = setting(
        False, "Average the 10 crops (corners, centre, and reflections) as the paper did.", "AlexNet §4.1"
    )
    batch_size: int = setting(256, "Images per forward pass.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(2, "Image-decoding processes for image folders.")
    strict: bool = setting(False, "Stop at the first unreadable image instead of skipping it.")


def in_model_order(dataset, model_classes: list[str]):
    """`dataset` with its labels renumbered to the model's class order: a model scores data of
    its own classes, whichever order they come in (class folders sort by name, a model keeps
    the order it was trained with)."""
    if list(dataset.classes) == list(model_classes):
        return dataset
    if sorted(dataset.classes) != sorted(model_classes):
        missing = sorted(set(model_classes) - set(dataset.classes))
        extra = sorted(set(dataset.classes) - set(model_classes))
        raise DataError(
            f"{dataset.source}: its classes do not match the model's (missing: {', '.join(missing[:4]) or 'none'}; "
            f"not the model's: {', '.join(extra[:4]) or 'none'}); evaluate on data of the same classes"
        )
    order = torch.tensor([model_classes.index(c) for c in dataset.classes])
    return replace(dataset, labels=order[dataset.labels], classes=list(model_classes))


def _same_path(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def evaluation_set(loaded, data: str, split: str | None = None):
    """The labelled images to score `loaded` (a LoadedModel) on. A run trained with
    --val-split on this same folder is scored on its own hold-out, never on its training images."""
    cfg = json.loads(loaded.checkpoint.get("config", "{}"))
    base = loaded.preprocess.base_size
    if cfg.get("val_split") and not split and _same_path(cfg.get("data", ""), data):
        dataset = resolve_classification(data, base, cfg["val_split"], cfg.get("seed", 0))[1]
    else:
        dataset = resolve_eval(data, base, split)
    return in_model_order(dataset, loaded.classes)


@torch.no_grad()
def evaluate(
    model,
    dataset,
    pre: transforms.Preprocess,
    device,
    ten_crop: bool = False,
    batch_size: int = default_of(EvalSettings, "batch_size"),
    workers: int = 0,
    ctx: DistContext = DistContext(),
    strict: bool = False,
    on_batch=None,
) -> dict:
    """{"top1", "top5", "loss", "images", "skipped"} over `dataset` (split across DDP ranks);
    with ten_crop also "centre_top1" and "centre_top5", the centre crop's own scores from the
    same pass."""
    model.eval()
    plan = batching.epoch_batches(len(dataset), batch_size, 0, 0, shuffle=False, drop_last=False)
    n = c1 = c5 = centre1 = centre5 = 0
    loss_sum = 0.0
    skipped = []
    for batch in batching.iterate(dataset, plan, ctx.rank, ctx.world, workers, strict):
        skipped += batch.failures
        if len(batch.labels) == 0:
            continue
        images, labels = batch.images.to(device, non_blocking=True), batch.labels.to(device)
        if ten_crop:
            # Average the softmax of the ten crops, one crop at a time (batch stays cache-sized).
            crops = [model(crop) for crop in transforms.ten_crops(images, pre)]
            logits = (sum(F.softmax(c, 1) for c in crops) / 10).log()
            h1, h5 = topk_correct(crops[_CENTRE], labels)
            centre1, centre5 = centre1 + h1, centre5 + h5
        else:
            logits = model(transforms.center_crop(images, pre))
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        h1, h5 = topk_correct(logits, labels)
        c1, c5, n = c1 + h1, c5 + h5, n + len(labels)
        if on_batch:
            on_batch(len(labels))
    n, c1, c5, centre1, centre5, loss_sum, n_skipped = ctx.all_sum(
        [n, c1, c5, centre1, centre5, loss_sum, len(skipped)]
    )
    n = int(n)
    return {
        "top1": c1 / n if n else 0.0,
        "top5": c5 / n if n else 0.0,
        "loss": loss_sum / n if n else float("nan"),
        "images": n,
        "skipped": int(n_skipped),
        "skipped_examples": [str(e) for e in skipped[:3]],
        "ten_crop": ten_crop,
        **({"centre_top1": centre1 / n if n else 0.0, "centre_top5": centre5 / n if n else 0.0} if ten_crop else {}),
    }


_CENTRE = 4  # transforms.ten_crops' fifth crop is center_crop's

"""Batched feature extraction: the one place that turns many images into vectors.

Files decode in DataLoader workers through the same batch plans and collate as training
(data/batching.py); the network runs on whole batches of centre crops and returns one
layer's activations (AlexNet §6.1: fc7 as an image descriptor; docs/references.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .data import batching, transforms
from .data.datasets import ArrayDataset, FolderDataset
from .errors import CheckpointError, ConfigError

LAYERS = ("fc7", "fc6", "pool5")
DEFAULT_LAYER = "fc7"  # AlexNet §6.1: fc7 as the image descriptor
BATCH_SIZE = 128  # images per forward pass when embedding


def file_dataset(paths, base_size: int) -> FolderDataset:
    """Files to embed. Each file's 'label' is its position in `paths`, so the files that
    survive decoding in a batch are matched back to their vectors."""
    return FolderDataset(list(paths), torch.arange(len(paths)), [], "files", base_size)


def array_dataset(images: torch.Tensor) -> ArrayDataset:
    """uint8 (N, C, H, W) images at base size, labelled by position as in file_dataset."""
    return ArrayDataset(images, torch.arange(len(images)), [], "arrays")


def check_layer(layer: str) -> str:
    if layer not in LAYERS:
        raise ConfigError(f"unknown layer {layer!r}: choose one of {', '.join(LAYERS)}")
    return layer


def feature_dim(model, pre: transforms.Preprocess, layer: str) -> int:
    with torch.no_grad():
        x = torch.zeros(1, 3, pre.crop_size, pre.crop_size, device=next(model.parameters()).device)
        return int(model.eval().features(x, layer).flatten(1).shape[1])


@dataclass
class EmbeddedBatch:
    positions: torch.Tensor  # int64 (B,): which inputs these vectors belong to
    vectors: np.ndarray  # float32 (B, D), C-contiguous (what FAISS takes)
    failures: list = field(default_factory=list)  # ImageDecodeError for inputs that did not decode


@torch.no_grad()
def embed_batches(
    model,
    dataset,
    pre: transforms.Preprocess,
    layer: str = DEFAULT_LAYER,
    device: torch.device | str = "cpu",
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    strict: bool = False,
    rank: int = 0,
    world: int = 1,
    source: str = "the model",
):
    """Yield an EmbeddedBatch per batch of `dataset` (from file_dataset / array_dataset), in
    order; with world > 1 this process embeds its slice rank::world of every batch. A model
    whose vectors are not finite (trained to nan) is refused, named by `source`."""
    check_layer(layer)
    device = torch.device(device)
    model.eval()
    channels_last = device.type == "cpu"  # faster CPU convolutions on whole batches
    if channels_last:
        model.to(memory_format=torch.channels_last)
    plan = batching.epoch_batches(len(dataset), batch_size, 0, 0, shuffle=False, drop_last=False)
    for batch in batching.iterate(dataset, plan, rank, world, workers, strict):
        if len(batch.labels) == 0:
            yield EmbeddedBatch(batch.labels, np.empty((0, 0), np.float32), batch.failures)
            continue
        x = transforms.center_crop(batch.images.to(device, non_blocking=True), pre)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        vectors = model.features(x, layer).flatten(1).float().cpu().numpy()
        if not np.isfinite(vectors).all():
            raise CheckpointError(
                f"{source} gives {layer} vectors that are not finite numbers (nan or inf): its weights are broken, "
                "e.g. trained with a learning rate too high; use another model"
            )
        yield EmbeddedBatch(batch.labels, np.ascontiguousarray(vectors), batch.failures)


def embed_labelled(
    model,
    dataset,
    pre: transforms.Preprocess,
    layer: str = DEFAULT_LAYER,
    device: torch.device | str = "cpu",
    batch_size: int = BATCH_SIZE,
    workers: int = 0,
    on_batch=None,
    model_name: str = "the model",
) -> tuple[np.ndarray, np.ndarray, list]:
    """All vectors of a labelled ArrayDataset / FolderDataset: (vectors (N, D), labels (N,),
    failures). Unreadable files are left out (and returned as failures)."""
    if isinstance(dataset, ArrayDataset):
        inputs = array_dataset(dataset.images)
    else:
        inputs = file_dataset(dataset.paths, dataset.base_size)
    chunks, positions, failures = [], [], []
    for batch in embed_batches(model, inputs, pre, layer, device, batch_size, workers, source=model_name):
        failures += batch.failures
        if len(batch.positions):
            chunks.append(batch.vectors)
            positions.append(batch.positions.numpy())
        if on_batch:
            on_batch(len(batch.positions) + len(batch.failures))
    if not chunks:
        return np.empty((0, 0), np.float32), np.empty(0, np.int64), failures
    labels = dataset.labels.numpy()[np.concatenate(positions)]
    return np.concatenate(chunks), labels, failures

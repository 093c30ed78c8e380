"""Batched feature extraction: the one place that turns many images into vectors.

Files decode in DataLoader workers through the same batch plans and collate as training
(data/batching.py); the network runs on whole batches of centre crops and returns one
layer's activations (AlexNet §6.1: fc7 as an image descriptor; docs/references.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .data import batching, transforms
from .data.datasets import ArrayDataset, FolderDataset
from .errors import CheckpointError, ConfigError
from .models.pooling import POOLS

LAYERS = ("fc7", "fc6", "pool5")  # of the central crop, as the network was trained
# conv5 of the whole image at a larger size, pooled (Tolias 2016, Radenović 2018): for photos
WHOLE_IMAGE_LAYERS = {"conv5-gem": "gem", "conv5-rmac": "rmac"}
IMAGE_LAYERS = LAYERS + tuple(WHOLE_IMAGE_LAYERS)  # what describes an image in an index
DEFAULT_LAYER = "fc7"  # AlexNet §6.1: fc7 as the image descriptor
BATCH_SIZE = 128  # images per forward pass when embedding
WHOLE_IMAGE_SCALE = 4  # whole-image input side, in crop sizes (4 x 28 = 112 px for alexnet-small)


def is_whole_image(layer: str) -> bool:
    return layer in WHOLE_IMAGE_LAYERS


def input_size(pre: transforms.Preprocess, layer: str) -> int:
    """The side images are decoded to for `layer`: the base size (then centre-cropped), or for
    a whole-image layer the whole image warped to WHOLE_IMAGE_SCALE crop sizes."""
    return WHOLE_IMAGE_SCALE * pre.crop_size if is_whole_image(layer) else pre.base_size


def file_dataset(paths, base_size: int, whole: bool = False) -> FolderDataset:
    """Files to embed. Each file's 'label' is its position in `paths`, so the files that
    survive decoding in a batch are matched back to their vectors."""
    return FolderDataset(list(paths), torch.arange(len(paths)), [], "files", base_size, whole=whole)


def files_for(paths, pre: transforms.Preprocess, layer: str) -> FolderDataset:
    """file_dataset decoded as `layer` needs."""
    return file_dataset(paths, input_size(pre, layer), is_whole_image(layer))


def array_dataset(images: torch.Tensor) -> ArrayDataset:
    """uint8 (N, C, H, W) images at base size, labelled by position as in file_dataset."""
    return ArrayDataset(images, torch.arange(len(images)), [], "arrays")


def check_layer(layer: str, allowed=IMAGE_LAYERS) -> str:
    if layer not in allowed:
        raise ConfigError(f"unknown layer {layer!r}: choose one of {', '.join(allowed)}")
    return layer


def feature_dim(model, pre: transforms.Preprocess, layer: str) -> int:
    with torch.no_grad():
        x = torch.zeros(1, 3, pre.crop_size, pre.crop_size, device=next(model.parameters()).device)
        return int(describe(model.eval(), x, layer).shape[1])


def describe(model, x: torch.Tensor, layer: str) -> torch.Tensor:
    """(B, D) vectors of normalised network inputs: a layer's activations, or a pooled conv5."""
    if is_whole_image(layer):
        pool = POOLS[WHOLE_IMAGE_LAYERS[layer]]
        # summed with the mirror image's: a mirrored copy gets the same vector (benchmarks/dedup.py)
        return F.normalize(pool(model.features(x, "conv5")) + pool(model.features(x.flip(3), "conv5")), dim=1)
    return model.features(x, layer).flatten(1)


def network_input(images: torch.Tensor, pre: transforms.Preprocess, layer: str) -> torch.Tensor:
    """Decoded uint8 batches -> what the network takes: the centre crop, or the whole image at
    input_size (arrays held at base size, e.g. Fashion-MNIST's, are scaled up to it)."""
    if not is_whole_image(layer):
        return transforms.center_crop(images, pre)
    size = input_size(pre, layer)
    x = transforms.normalize(images, pre)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x


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
        x = network_input(batch.images.to(device, non_blocking=True), pre, layer)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        vectors = describe(model, x, layer).float().cpu().numpy()
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
        inputs = files_for(dataset.paths, pre, layer)
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

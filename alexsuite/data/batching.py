"""Deterministic batch plans and the loaders that fill them.

Every process draws the same permutation for an epoch, cuts the same global batches, and takes
its own slice (rank::world): one process with batch B and W processes with B/W each see the
same samples per step, which is what makes DDP runs comparable and resumes exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .datasets import ArrayDataset, FolderDataset


def epoch_batches(
    n: int, batch_size: int, epoch: int, seed: int, shuffle: bool = True, drop_last: bool = True
) -> list[torch.Tensor]:
    """Global batches of sample indices for one epoch."""
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return list(order[:stop].split(batch_size))


@dataclass
class Batch:
    images: torch.Tensor  # uint8 (B, C, H, W) at base size
    labels: torch.Tensor  # int64 (B,)
    failures: list  # ImageDecodeError for files skipped in this batch
    step: int  # index of the global batch within the epoch


def _collate(samples):
    good = [(img, label) for img, label in samples if img is not None]
    failures = [err for img, err in samples if img is None]
    if not good:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), failures
    return torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), failures


def iterate(
    dataset: ArrayDataset | FolderDataset,
    batches: list[torch.Tensor],
    rank: int = 0,
    world: int = 1,
    workers: int = 0,
    strict: bool = False,
):
    """Yield this rank's Batch for each global batch. Image folders decode in `workers`
    processes; files that fail are dropped from the batch and reported (or raised if strict)."""
    shards = [b[rank::world] for b in batches]
    if isinstance(dataset, ArrayDataset):
        for step, idx in enumerate(shards):
            images, labels, failures = dataset.fetch(idx)
            yield Batch(images, labels, failures, step)
        return
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[s.tolist() for s in shards],
        num_workers=workers,
        collate_fn=_collate,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        # its own seed source: a DataLoader otherwise draws one from the global RNG, so whether
        # validation ran would change the dropout masks of the training that follows
        generator=torch.Generator().manual_seed(0),
    )
    for step, (images, labels, failures) in enumerate(loader):
        if strict and failures:
            raise failures[0]
        yield Batch(images, labels, failures, step)

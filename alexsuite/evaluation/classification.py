"""Classification metrics over arrays: how many labels fall in the top k (AlexNet §4.1 reports
top-1 and top-5; docs/references.md)."""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[int]:
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hits = top == labels[:, None]
    return [int(hits[:, : min(k, kmax)].any(1).sum()) for k in ks]

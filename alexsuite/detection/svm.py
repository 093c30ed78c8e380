"""R-CNN's per-class linear SVMs with hard-negative mining (R-CNN §2.3;
settings from the released rcnn_train.m; docs/references.md).

The objective is liblinear's L2-regularised, L2-loss (squared hinge) primal that R-CNN used:
    min_w  0.5 |w|^2 + C * sum_i c_i * max(0, 1 - y_i (w . x_i + B * b))^2
with the bias as an extra feature of value B (the "bias multiplier") and positives weighted
c_i = 2. It is smooth and convex, so full-batch L-BFGS in torch solves it to the same point
liblinear does, on the CPU or the GPU, without another dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..settings import finite, require, setting


@dataclass(frozen=True)
class SVMSettings:
    C: float = setting(1e-3, "SVM regularisation C.", "rcnn_train.m")
    bias_multiplier: float = setting(10.0, "The bias's feature value B.", "rcnn_train.m")
    positive_weight: float = setting(2.0, "Loss weight of positives.", "rcnn_train.m")
    hard_score: float = setting(-1.0001, "A negative scoring above this is hard: keep it.", "rcnn_train.m")
    easy_score: float = setting(-1.2, "A cached negative scoring below this is easy: evict it.", "rcnn_train.m")
    retrain_every: int = setting(2000, "Retrain after this many new hard negatives.", "rcnn_train.m")
    max_iter: int = setting(100, "L-BFGS iterations per solve.")

    def check(self) -> SVMSettings:
        require(finite(self.C) and self.C > 0, f"--svm-c must be a finite number above 0, got {self.C}")
        return self


@dataclass
class LinearSVM:
    weight: torch.Tensor  # (D,)
    bias: float

    def score(self, features: torch.Tensor) -> torch.Tensor:
        return features.float() @ self.weight + self.bias


def fit(
    features: torch.Tensor, targets: torch.Tensor, settings: SVMSettings = SVMSettings(), init: LinearSVM | None = None
) -> LinearSVM:
    """Solve the objective above for targets in {+1, -1}."""
    x = features.float()
    y = targets.float()
    cost = torch.where(y > 0, settings.C * settings.positive_weight, settings.C)
    B = settings.bias_multiplier
    w = (init.weight.clone() if init is not None else torch.zeros(x.shape[1], device=x.device)).requires_grad_()
    b = torch.tensor(init.bias / B if init is not None else 0.0, device=x.device).requires_grad_()
    opt = torch.optim.LBFGS(
        [w, b],
        max_iter=settings.max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective():
        opt.zero_grad()
        margin = (1 - y * (x @ w + B * b)).clamp_min(0)
        loss = 0.5 * (w.dot(w) + b * b) + (cost * margin * margin).sum()
        loss.backward()
        return loss

    opt.step(objective)
    return LinearSVM(w.detach(), float(b.detach()) * B)


def train_with_hard_negatives(positives: torch.Tensor, negative_batches, settings: SVMSettings = SVMSettings()):
    """One pass of R-CNN's hard-negative mining for one class. `negative_batches` yields the
    negative features of one image at a time (proposals with IoU < 0.3 to every object of
    the class). Returns (svm, stats)."""
    batches = iter(negative_batches)
    first = next(batches, None)
    cache = first if first is not None else torch.empty(0, positives.shape[1])
    svm = fit(*_stack(positives, cache), settings)
    new_hard, seen, retrains = 0, len(cache), 1
    for negatives in batches:
        seen += len(negatives)
        hard = negatives[svm.score(negatives) > settings.hard_score]
        if len(hard):
            cache = torch.cat([cache, hard])
            new_hard += len(hard)
        if new_hard >= settings.retrain_every:
            svm = fit(*_stack(positives, cache), settings, init=svm)
            cache = cache[svm.score(cache) >= settings.easy_score]  # evict what became easy
            new_hard, retrains = 0, retrains + 1
    if new_hard:
        svm = fit(*_stack(positives, cache), settings, init=svm)
        retrains += 1
    return svm, {"negatives_seen": seen, "negatives_kept": len(cache), "retrains": retrains}


def _stack(positives: torch.Tensor, negatives: torch.Tensor):
    x = torch.cat([positives.float(), negatives.float()])
    y = torch.cat([torch.ones(len(positives)), -torch.ones(len(negatives))]).to(x.device)
    return x, y

"""Platt scaling of the SVM scores (Platt 1999; docs/references.md): per class and test mode,
p = sigmoid(a * svm_score + b), the probability that a detection is right (a true positive by
VOC's matching at IoU 0.5), with a > 0 so that the SVM's ranking, hence AP, is unchanged.

The fit must see scores the SVMs did not train on: the training images are split by image into
folds, each fold's images are detected by SVMs and box regressors trained on the other folds
(the same train_svms and train_regressors), selected as Detector.select does (per class the top
boxes, regressed, NMS; no threshold), and each detection is labelled by VOC matching
(evaluation/detection.py). Two approximations: the fine-tuned network has seen every training
image, and a box is regressed only where its pool5 is cached (boxes near an object, the ones
regression can make right; the cache holds no others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..boxes import MAX_PER_CLASS, NMS_IOU, Detections, Truth, select_per_class, valid
from ..evaluation.detection import match_class
from ..settings import require, setting
from .heads import train_regressors, train_svms

MIN_SLOPE = 1e-3  # the smallest a kept: a > 0 keeps the SVM's ranking


@dataclass(frozen=True)
class CalibrationSettings:
    folds: int = setting(
        3,
        "Training images split into this many folds (by image, in order) to score each fold with SVMs "
        "trained on the others and fit the probabilities on those scores; 0: none, scores stay raw SVM scores.",
        "Platt 1999",
    )
    min_each: int = setting(
        5,
        "A class with fewer true or fewer false positives than this among its held-out detections "
        "takes the fit pooled over all classes.",
    )

    def check(self) -> CalibrationSettings:
        require(
            self.folds == 0 or self.folds >= 2, f"--calibration-folds must be 0 (none) or at least 2, got {self.folds}"
        )
        return self


def platt_targets(hits: np.ndarray) -> np.ndarray:
    """Platt's smoothed targets: (N+ + 1) / (N+ + 2) for hits, 1 / (N- + 2) for misses, so that
    a separable set still has a finite fit."""
    hits = np.asarray(hits, bool)
    n_pos, n_neg = int(hits.sum()), int((~hits).sum())
    return np.where(hits, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))


def fit_platt(scores, targets, min_slope: float = MIN_SLOPE) -> tuple[float, float]:
    """(a, b) minimising the cross-entropy of sigmoid(a * scores + b) against `targets` in [0, 1],
    with a >= min_slope (the convex problem's optimum on that edge when the free one lies beyond)."""
    x = np.stack([np.asarray(scores, np.float64), np.ones(len(scores))], 1)
    t = np.asarray(targets, np.float64)
    mean = min(max(float(t.mean()), 1e-6), 1 - 1e-6)
    a, b = _newton(x, t, np.array([0.0, math.log(mean / (1 - mean))]), free=[0, 1])
    if a < min_slope:
        a, b = _newton(x, t, np.array([min_slope, b]), free=[1])
    return float(a), float(b)


def _newton(x: np.ndarray, t: np.ndarray, theta: np.ndarray, free: list[int], iterations: int = 100):
    """Newton's method with backtracking on the parameters `free` (Lin, Lin & Weng 2007's recipe)."""

    def loss(th):
        z = x @ th
        return float((np.logaddexp(0, z) - t * z).sum())

    current = loss(theta)
    for _ in range(iterations):
        p = 0.5 * (1 + np.tanh(0.5 * (x @ theta)))  # sigmoid without overflow
        grad = x.T @ (p - t)
        hess = (x * (p * (1 - p))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.zeros(2)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        size = 1.0
        while size > 1e-10:
            trial = theta - size * step
            if loss(trial) <= current - 1e-4 * size * float(grad @ step):
                break
            size /= 2
        else:
            break  # no step lowers the loss: at the optimum within rounding
        theta, previous, current = trial, current, loss(trial)
        if previous - current <= 1e-12 * max(1.0, abs(current)):
            break
    return theta


def probabilities(svm_scores: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """sigmoid(a * s + b) of scores (N, K) with per-class params (K, 2)."""
    return torch.sigmoid(logits(svm_scores, params))


def logits(svm_scores: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    return svm_scores * params[:, 0] + params[:, 1]


def threshold_logit(threshold: float) -> float:
    """The logit a probability threshold keeps above: 0 or less keeps every box, 1 or more none."""
    if threshold <= 0:
        return -math.inf
    if threshold >= 1:
        return math.inf
    return math.log(threshold / (1 - threshold))


def fold_of(n: int, folds: int) -> list[np.ndarray]:
    """The image indices of each fold: contiguous blocks, since neighbours in a list are often
    alike (one photo's scenes, a video's frames) and must not score each other."""
    return [f for f in np.array_split(np.arange(n), min(folds, n)) if len(f)]


def held_out_detections(
    loads, items, truths, num_classes: int, scales, cfg, on_class=None, nms=NMS_IOU, max_per_class=MAX_PER_CLASS
):
    """Per test mode (one loader each in `loads`), per class, (raw SVM scores, hits) of every
    training image's detections by the SVMs and regressors trained without its fold. `cfg`:
    the DetectorConfig (SVM, negative and regression settings, folds); `scales`: (layer, pool5)."""
    n = len(items)
    found = [[None] * n for _ in loads]
    for rows in fold_of(n, cfg.calibration.folds):
        others = np.setdiff1d(np.arange(n), rows)
        sub = [lambda i, load=load, others=others: load(int(others[i])) for load in loads]
        sub_truths = [truths[int(i)] for i in others]
        svm_w, svm_b, _ = train_svms(
            sub, len(others), sub_truths, num_classes, scales[0], cfg.svm, cfg.negative_iou, on_class
        )
        reg_w, reg_b, _ = train_regressors(
            sub, len(others), sub_truths, num_classes, scales[1], cfg.regression_iou, cfg.ridge
        )
        heads = (svm_w, svm_b, reg_w, reg_b)
        for m, load in enumerate(loads):
            for i in rows.tolist():
                found[m][i] = _detect_cached(load(i), heads, scales, items[i], nms, max_per_class)
    gold = [Truth(a.boxes, t[1], a.difficult) for a, t in zip(items, truths)]
    return [[match_class(dets, gold, c)[:2] for c in range(num_classes)] for dets in found]


def _detect_cached(f: dict, heads, scales, item, nms: float, max_per_class: int) -> Detections:
    """One training image's detections from its cached features, by Detector.select's rules;
    a box whose pool5 is not cached (far from every object) is not regressed."""
    svm_w, svm_b, reg_w, reg_b = heads
    g = int(f["gt"])
    boxes = f["boxes"][g:].float()
    ok = valid(boxes)  # as Detector.score drops them
    scores = f["layer"][g:][ok].float() * scales[0] @ svm_w.T + svm_b
    slot = torch.full((len(f["boxes"]),), -1, dtype=torch.long)
    slot[f["pool5_rows"]] = torch.arange(len(f["pool5_rows"]))
    slot = slot[g:][ok]
    moves = torch.einsum("rd,kdf->rkf", f["pool5"].float() * scales[1], reg_w) + reg_b  # (rows, K, 4)

    def deltas(c, r):
        out = torch.zeros(len(r), 4)
        have = slot[r] >= 0
        out[have] = moves[slot[r][have], c]
        return out

    keep = torch.ones_like(scores, dtype=torch.bool)  # no threshold
    r, labels, moved = select_per_class(boxes[ok], scores, keep, item.width, item.height, nms, max_per_class, deltas)
    return Detections(moved, scores[r, labels], labels)


def fit_classes(held: list, classes: list[str], settings: CalibrationSettings):
    """(K, 2) parameters and a record per class from held-out (scores, hits): a class with too
    few true or false positives takes the fit pooled over all classes."""
    scores = np.concatenate([s for s, _ in held]) if held else np.empty(0)
    hits = np.concatenate([h for _, h in held]).astype(bool) if held else np.empty(0, bool)
    pooled = fit_platt(scores, platt_targets(hits))
    params, per_class = [], {}
    for name, (s, h) in zip(classes, held):
        own = min(int(h.sum()), int((~h).sum())) >= settings.min_each
        a, b = fit_platt(s, platt_targets(h)) if own else pooled
        params.append((a, b))
        per_class[name] = {"a": a, "b": b, "pooled": not own, **_observed(h)}
    record = {"classes": per_class, "pooled": {"a": pooled[0], "b": pooled[1], **_observed(hits)}}
    return torch.tensor(params, dtype=torch.float32), record


def _observed(hits: np.ndarray) -> dict:
    return {"detections": int(len(hits)), "precision": float(hits.mean()) if len(hits) else None}

"""R-CNN's fine-tuning stage (R-CNN §2.3 "supervised fine-tuning"; the
rcnn fine-tuning solver; docs/references.md): the backbone's classifier is replaced by a
(K + 1)-way layer (background first), and the whole network is trained by SGD on warped
proposals: a proposal is a positive of its best-overlapping object's class when IoU >= 0.5,
background otherwise, and every batch of 128 holds 32 positives and 96 background windows
drawn uniformly from all training images.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..boxes import box_iou, mirror
from ..data import transforms
from ..errors import ConfigError, TrainingDiverged
from ..fileio import atomic_write_bytes, open_regular
from ..settings import finite, require, setting
from .framing import Framing, warp_regions
from .regions import context_crop_pool5, crop_shapes, fast_margin, level_pool5, pyramid_levels

BACKGROUND = "__background__"


@dataclass(frozen=True)
class FinetuneSettings:
    iterations: int = setting(
        2000,
        "Fine-tuning iterations (0: keep the backbone as it is, the paper's 'no "
        "fine-tuning' row). R-CNN ran 40k on VOC's 5k images: scale with your data.",
        "rcnn fine-tuning solver",
    )
    batch_size: int = setting(128, "Windows per fine-tuning iteration.", "rcnn fine-tuning solver")
    fg_fraction: float = setting(0.25, "Share of each batch that is object windows (32 of 128).", "R-CNN §2.3")
    fg_iou: float = setting(0.5, "A window is its object's class when IoU >= this.", "R-CNN §2.3")
    bg_iou: float = setting(0.5, "A window is background when IoU < this with every object.", "R-CNN §2.3")
    lr: float = setting(
        0.001,
        "Fine-tuning learning rate (either method), a tenth of the pre-training rate; a backbone "
        "trained from scratch here, far from your images, needs more (e.g. 0.04).",
        "rcnn fine-tuning solver",
    )
    momentum: float = setting(0.9, "SGD momentum.", "rcnn fine-tuning solver")
    weight_decay: float = setting(5e-4, "Weight decay.", "rcnn fine-tuning solver")
    step_fraction: float = setting(
        0.5, "lr / 10 after this share of the iterations (rcnn: step 20k of 40k).", "rcnn fine-tuning solver"
    )
    flip: bool = setting(True, "Mirror half of the windows.", "rcnn fine-tuning solver")
    recolour: bool = setting(
        False,
        "Fine-tuning sees each window (fast-rcnn: each image) with its colour channels shuffled and scaled "
        "by U(0.6, 1.4) (not in R-CNN; for objects that come in any colour).",
    )
    fast_fraction: float = setting(
        0.0,
        "Share of each fine-tuning batch read about as --mode fast reads it "
        "(conv5 of the window with image around it, RoI-pooled from the middle), so "
        "the network learns both modes' features (not in R-CNN).",
    )
    image_fraction: float = setting(
        0.0,
        "Share of each fine-tuning batch read exactly as --mode fast reads it: "
        "groups of one image's windows RoI-pooled from its whole conv5 map at their "
        "pyramid level.",
        "Fast R-CNN §2.3",
    )
    rois_per_image: int = setting(
        16,
        "Windows per image-and-level group of --image-fraction (Fast R-CNN: 64 of each of 2 images).",
        "Fast R-CNN §2.3",
    )
    checkpoint_every: int = setting(200, "Iterations between resumable saves.")
    seed: int = setting(0, "Seed of the fine-tuning batches, dropout and the new head.")

    def check(self) -> FinetuneSettings:
        require(finite(self.lr) and self.lr > 0, f"--lr must be a finite number above 0, got {self.lr}")
        for name in ("momentum", "weight_decay", "fast_fraction", "image_fraction", "fg_fraction", "step_fraction"):
            value = getattr(self, name)
            require(
                finite(value, 0, 1 if "fraction" in name else math.inf),
                f"fine-tuning's {name.replace('_', ' ')} must be a finite number"
                f"{' from 0 to 1' if 'fraction' in name else ' of 0 or more'}, got {value}",
            )
        require(
            self.batch_size >= 2 and self.iterations >= 0, "--batch-size must be 2 or more, --finetune-iters 0 or more"
        )
        require(abs(self.seed) < 2**40, f"--seed must be between -2**40 and 2**40, got {self.seed}")
        if self.fast_fraction + self.image_fraction > 1:
            raise ConfigError(
                f"--fast-fraction {self.fast_fraction} and --image-fraction {self.image_fraction} "
                "take more than the whole batch: make them add up to 1 at most"
            )
        return self


@dataclass
class Windows:
    """Every training window: its image, box and fine-tuning label (0 = background)."""

    image: torch.Tensor  # int64 (N,)
    boxes: torch.Tensor  # float (N, 4)
    labels: torch.Tensor  # int64 (N,)

    @property
    def foreground(self) -> torch.Tensor:
        return torch.nonzero(self.labels > 0).flatten()

    @property
    def background(self) -> torch.Tensor:
        return torch.nonzero(self.labels == 0).flatten()


def best_overlaps(boxes: torch.Tensor, truth: torch.Tensor, truth_labels: torch.Tensor):
    """(IoU, class index) of the object each box overlaps most; (0, -1) without objects."""
    if not len(truth) or not len(boxes):
        return torch.zeros(len(boxes)), torch.full((len(boxes),), -1, dtype=torch.long)
    overlap, which = box_iou(boxes.float(), truth.float()).max(1)
    return overlap, truth_labels[which]


def build_windows(
    proposals: list[torch.Tensor],
    truths: list[tuple[torch.Tensor, torch.Tensor]],
    settings: FinetuneSettings = FinetuneSettings(),
) -> Windows:
    """truths: per image (boxes, class indices 0..K-1). Ground-truth boxes are windows too."""
    images, boxes, labels = [], [], []
    for i, (props, (gt, gt_labels)) in enumerate(zip(proposals, truths)):
        b = torch.cat([gt.float(), torch.as_tensor(props).float()])
        overlap, cls = best_overlaps(b, gt, gt_labels)
        label = torch.where(overlap >= settings.fg_iou, cls + 1, 0)
        keep = (overlap >= settings.fg_iou) | (overlap < settings.bg_iou)
        images.append(torch.full((int(keep.sum()),), i, dtype=torch.long))
        boxes.append(b[keep])
        labels.append(label[keep])
    return Windows(torch.cat(images), torch.cat(boxes), torch.cat(labels))


def replace_head(model: nn.Module, num_outputs: int, seed: int = 0) -> None:
    """A fresh last layer with `num_outputs` classes, N(0, 0.01) weights and zero biases
    (rcnn's fc8 for fine-tuning)."""
    old = model.classifier[-1]
    head = nn.Linear(old.in_features, num_outputs)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=g) * 0.01)
        head.bias.zero_()
    model.classifier[-1] = head.to(old.weight.device)


def sample_batch(windows: Windows, settings: FinetuneSettings, generator: torch.Generator) -> torch.Tensor:
    """Indices of one batch: fg_fraction positives (fewer if there are fewer), the rest
    background, each drawn uniformly with replacement."""
    fg, bg = windows.foreground, windows.background
    n_fg = min(round(settings.batch_size * settings.fg_fraction), len(fg)) if len(fg) else 0
    n_bg = settings.batch_size - n_fg if len(bg) else 0
    picks = []
    if n_fg:
        picks.append(fg[torch.randint(len(fg), (n_fg,), generator=generator)])
    if n_bg:
        picks.append(bg[torch.randint(len(bg), (n_bg,), generator=generator)])
    return torch.cat(picks) if picks else torch.empty(0, dtype=torch.long)


def sample_image_groups(
    windows: Windows, levels: torch.Tensor, count: int, per_group: int, fg_fraction: float, generator: torch.Generator
) -> list[tuple[int, tuple[int, int], torch.Tensor]]:
    """Fast R-CNN's hierarchical sampling (Fast R-CNN §2.3: images first, then RoIs from each),
    with one pyramid level per sampled image as its single-scale training picks one scale:
    each group starts from a random object window (so levels come as often as objects'
    windows sit at them) and a random view, and takes `per_group` windows of that image,
    view and level, `fg_fraction` of them objects, with replacement. `levels` (views, N, 2):
    every window's pyramid level in each view. Returns (view, level, window indices)."""
    bounds = torch.searchsorted(windows.image, torch.arange(int(windows.image.max()) + 2))
    seeds = windows.foreground if len(windows.foreground) else torch.arange(len(windows.labels))
    groups = []
    for _ in range(count):
        seed = int(seeds[torch.randint(len(seeds), (1,), generator=generator)])
        view = int(torch.randint(len(levels), (1,), generator=generator))
        image = int(windows.image[seed])
        lo, hi = int(bounds[image]), int(bounds[image + 1])
        level = levels[view, seed]
        same = lo + torch.nonzero((levels[view, lo:hi] == level).all(1)).flatten()
        is_object = windows.labels[same] > 0
        fg, bg = same[is_object], same[~is_object]
        n_fg = max(1, round(per_group * fg_fraction)) if len(bg) else per_group
        n_fg = n_fg if len(fg) else 0
        picks = [fg[torch.randint(len(fg), (n_fg,), generator=generator)]] if n_fg else []
        if per_group - n_fg:
            picks.append(bg[torch.randint(len(bg), (per_group - n_fg,), generator=generator)])
        groups.append((view, tuple(level.tolist()), torch.cat(picks)))
    return groups


def image_group_pool5(
    model,
    windows: Windows,
    picks: torch.Tensor,
    level: tuple[int, int],
    view: Framing,
    load_image,
    pre: transforms.Preprocess,
    device,
    flip: bool,
    colour: torch.Generator | None,
    grid: int,
) -> torch.Tensor:
    """pool5 of picked windows of one image read as fast mode reads them at `level`: the whole
    (mirrored, recoloured) image's conv5 map, RoI-pooled to `grid` (the conv5 side of a warped
    crop), differentiable."""
    image = load_image(int(windows.image[picks[0]])).to(device)
    x = transforms.normalize(image[None], pre)
    boxes = windows.boxes[picks].to(device)
    if flip:  # the mirrored image, and each box mirrored with it: same size, same level
        x, boxes = x.flip(3), mirror(boxes, x.shape[-1])
    if colour is not None:
        x = recolour(x, pre, colour)
    return level_pool5(model, x, view.windows(boxes, pre.crop_size), level, grid)


def warp_batch(
    windows: Windows,
    picks: torch.Tensor,
    load_image,
    pre: transforms.Preprocess,
    device,
    margin: int = 0,
    framing: Framing = Framing(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """The warped crops of the picked windows (grouped by image, one warp call each) and their
    labels; `margin`, `framing`: see warp_regions."""
    picks = picks[torch.argsort(windows.image[picks], stable=True)]
    crops = []
    for img in torch.unique_consecutive(windows.image[picks]).tolist():
        mine = picks[windows.image[picks] == img]
        crops.append(
            warp_regions(load_image(img).to(device), windows.boxes[mine].to(device), pre, framing, margin=margin)
        )
    return torch.cat(crops), windows.labels[picks].to(device)


def recolour(
    x: torch.Tensor, pre: transforms.Preprocess, generator: torch.Generator, gain: tuple[float, float] = (0.6, 1.4)
) -> torch.Tensor:
    """Normalised crops (N, 3, h, w) with each crop's colour channels shuffled and scaled:
    the same object in another colour (done on the 0-1 scale, then normalised again). What
    lies outside the image stays 0, the mean colour, as the warp and fast mode fill it."""
    n = len(x)
    mean = torch.tensor(pre.mean, device=x.device)[None, :, None, None]
    std = torch.tensor(pre.std, device=x.device)[None, :, None, None]
    order = torch.argsort(torch.rand(n, 3, generator=generator), dim=1).to(x.device)
    scale = (gain[0] + (gain[1] - gain[0]) * torch.rand(n, 3, generator=generator)).to(x.device)
    raw = (x * std + mean).gather(1, order[:, :, None, None].expand_as(x))
    outside = (x == 0).all(1, keepdim=True)
    return torch.where(outside, 0.0, (raw * scale[:, :, None, None] - mean) / std)


@dataclass
class _Reader:
    """How fine-tuning reads windows: the model and its input, the framing's views, and the
    groups of --image-fraction (Fast R-CNN's per-image reads)."""

    model: nn.Module
    pre: transforms.Preprocess
    windows: Windows
    load_image: object
    settings: FinetuneSettings
    views: tuple
    device: torch.device
    channels_last: bool
    margin: int = 0  # image around a window read as fast mode reads it
    n_groups: int = 0  # whole groups of one image and level per batch
    per_group: int = 0
    levels: torch.Tensor | None = None  # (views, N, 2): every window's pyramid level per view
    grid: int = 0  # conv5 side of a warped crop

    @classmethod
    def make(cls, model, pre, windows, load_image, settings: FinetuneSettings, framing: Framing, device):
        channels_last = device.type == "cpu"  # faster CPU convolutions on batches of crops (CHANGELOG.md)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        reader = cls(
            model, pre, windows, load_image, settings, framing.views, device, channels_last, fast_margin(pre.crop_size)
        )
        if settings.image_fraction > 0:  # that share in whole groups, as many as fit (one group at least)
            share = settings.batch_size * settings.image_fraction
            reader.per_group = min(settings.rois_per_image, max(1, round(share)))
            reader.n_groups = max(1, int(share // reader.per_group))
            reader.levels = torch.stack([pyramid_levels(windows.boxes, pre, framing=v) for v in reader.views])
            reader.grid = crop_shapes(model, pre)[0]
        return reader


def finetune(
    model: nn.Module,
    pre: transforms.Preprocess,
    windows: Windows,
    load_image,
    settings: FinetuneSettings = FinetuneSettings(),
    device="cpu",
    state_file: Path | None = None,
    on_step=None,
    key: str = "",
    framing: Framing = Framing(),
) -> dict:
    """Fine-tune `model` in place (its head already replaced) on windows read with `framing`;
    resumes from `state_file` when it holds a run with the same settings and `key` (what else
    it depends on: backbone, data, framing), and saves there every checkpoint_every
    iterations. Returns stats."""
    device = torch.device(device)
    model.to(device).train()
    reader = _Reader.make(model, pre, windows, load_image, settings, framing, device)
    key = json.dumps({"settings": asdict(settings), "run": key}, sort_keys=True)
    opt, sched, start = _resume(state_file, key, model, settings, device)
    recent = []
    for it in range(start, settings.iterations):
        loss = _iteration(reader, opt, it)
        sched.step()
        recent = (recent + [loss])[-50:]
        if on_step:
            on_step(1, sum(recent) / len(recent))
        done = it + 1
        if state_file is not None and (done % settings.checkpoint_every == 0 or done == settings.iterations):
            payload = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "iteration": done,
                "settings": key,
            }
            atomic_write_bytes(state_file, lambda f, payload=payload: torch.save(payload, f))
    model.eval()
    return {
        "iterations": settings.iterations,
        "resumed_at": start,
        "final_loss": sum(recent) / len(recent) if recent else None,
        "positives": len(windows.foreground),
        "background": len(windows.background),
    }


def _optimizer(model, settings: FinetuneSettings):
    """SGD and its step schedule: lr / 10 after step_fraction of the iterations."""
    opt = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    step = max(1, round(settings.iterations * settings.step_fraction))
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.1)


def _resume(state_file: Path | None, key: str, model, settings: FinetuneSettings, device):
    """(optimizer, schedule, first iteration): those of a saved run with the same `key`, its
    weights loaded into `model`; else fresh ones from iteration 0. A damaged or foreign state
    file starts over, as other settings do, with the model as it was."""
    opt, sched = _optimizer(model, settings)
    if state_file is None or not state_file.exists():
        return opt, sched, 0
    before = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        with open_regular(state_file) as f:
            saved = torch.load(f, map_location=device, weights_only=True)
        if saved.get("settings") != key:
            return opt, sched, 0
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        return opt, sched, int(saved["iteration"])
    except Exception:  # torch raises several types for truncated or foreign files
        model.load_state_dict(before)
        return (*_optimizer(model, settings), 0)


def _iteration(reader: _Reader, opt, it: int) -> float:
    """One SGD step; every draw comes from the iteration's own generator, so a resumed run
    draws the batches an unbroken one would. Returns the loss."""
    settings, device = reader.settings, reader.device
    seed = settings.seed * 1_000_003 + it
    g = torch.Generator().manual_seed(seed)
    groups, picks, read_fast, view = _sample(reader, g)
    crops = _warped(reader, picks, read_fast, view, g)
    group_flips = (torch.rand(len(groups), generator=g) < 0.5).tolist() if settings.flip else [False] * len(groups)
    # Dropout masks from this iteration's own seed, not the process-wide RNG: whatever ran
    # before (the demo's earlier stages, a resume) the same iteration draws the same masks.
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        model, pre = reader.model, reader.pre
        pool5 = [context_crop_pool5(model, x, pre, m) if m else model.pool5(model.conv5(x)) for x, _, m in crops]
        labels = [y for _, y, _ in crops]
        for (v, level, part), flip in zip(groups, group_flips):
            pool5.append(
                image_group_pool5(
                    model,
                    reader.windows,
                    part,
                    level,
                    reader.views[v],
                    reader.load_image,
                    pre,
                    device,
                    flip,
                    g if settings.recolour else None,
                    reader.grid,
                )
            )
            labels.append(reader.windows.labels[part].to(device))
        loss = nn.functional.cross_entropy(model.head(torch.cat(pool5), "logits"), torch.cat(labels))
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"the fine-tuning loss became {loss.item()} at iteration {it + 1} (lr {opt.param_groups[0]['lr']:g}): "
                "lower --lr; the stages before fine-tuning are kept"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
    opt.step()
    return loss.item()


def _sample(reader: _Reader, g: torch.Generator):
    """One batch's windows: (image groups, warped picks, which picks read as fast mode does,
    each pick's view)."""
    settings, windows = reader.settings, reader.windows
    by_image = reader.n_groups > 0
    groups = (
        sample_image_groups(windows, reader.levels, reader.n_groups, reader.per_group, settings.fg_fraction, g)
        if by_image
        else []
    )  # whole groups of one image and level; the rest of the batch is warped
    picks = sample_batch(
        windows,
        replace(settings, batch_size=settings.batch_size - reader.n_groups * reader.per_group)
        if by_image
        else settings,
        g,
    )
    crop_share = (
        settings.fast_fraction * settings.batch_size / max(1, len(picks)) if by_image else settings.fast_fraction
    )  # of the warped windows
    read_fast = (
        torch.rand(len(picks), generator=g) < crop_share
        if settings.fast_fraction
        else torch.zeros(len(picks), dtype=torch.bool)
    )  # R-CNN's recipe draws what it always drew
    # a framing of several views: each window is read in one of them, drawn evenly
    views = len(reader.views)
    view = torch.randint(views, (len(picks),), generator=g) if views > 1 else torch.zeros(len(picks), dtype=torch.long)
    return groups, picks, read_fast, view


def _warped(reader: _Reader, picks, read_fast, view, g: torch.Generator) -> list:
    """(crops, labels, margin) per view: the warped windows, then those read as fast mode does,
    mirrored and recoloured as the settings say."""
    settings, device = reader.settings, reader.device
    out = []
    for v, fast in itertools.product(range(len(reader.views)), (False, True)):
        part = picks[(view == v) & (read_fast == fast)]
        if not len(part):
            continue
        m = reader.margin if fast else 0
        x, y = warp_batch(
            reader.windows, part, reader.load_image, reader.pre, device, margin=m, framing=reader.views[v]
        )
        if settings.flip:
            flip = (torch.rand(len(x), generator=g) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if settings.recolour:
            x = recolour(x, reader.pre, g)
        if reader.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append((x, y, m))
    return out

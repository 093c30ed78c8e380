"""R-CNN's fine-tuning stage (Girshick et al. 2014, Section 2.3 "supervised fine-tuning"; the
released rcnn code's settings, see REFERENCES.md): the backbone's classifier is replaced by a
(K + 1)-way layer (background first), and the whole network is trained by SGD on warped
proposals: a proposal is a positive of its best-overlapping object's class when IoU >= 0.5,
background otherwise, and every batch of 128 holds 32 positives and 96 background windows
drawn uniformly from all training images.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from ..data import transforms
from ..embedding import Framing, warp_regions
from ..errors import ConfigError
from ..fileio import atomic_write_bytes
from .boxes import box_iou, mirror
from .regions import context_crop_pool5, crop_shapes, fast_margin, level_pool5, pyramid_levels

BACKGROUND = "__background__"


@dataclass(frozen=True)
class FinetuneSettings:
    iterations: int = 2000          # R-CNN ran 40k-70k on VOC's 5k images; scale with your data
    batch_size: int = 128           # rcnn finetune solver: batch 128
    fg_fraction: float = 0.25       # 32 positives of 128
    fg_iou: float = 0.5             # positive when IoU >= 0.5 with an object
    bg_iou: float = 0.5             # background when IoU < 0.5 with every object
    lr: float = 0.001               # base_lr 0.001 (a tenth of pre-training's 0.01)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    step_fraction: float = 0.5      # lr / 10 after this share of iterations (rcnn: step 20k of 40k)
    flip: bool = True               # rcnn window layer: mirror = true
    recolour: bool = False          # not R-CNN's: per window, shuffle the colour channels and scale
                                    # each by U(0.6, 1.4); for objects whose colour says nothing
    fast_fraction: float = 0.0      # not R-CNN's: this share of each batch is read about as --mode
                                    # fast reads it: each window warped with image around it, RoI-pooled
                                    # from the middle of its conv5 map (regions.context_crop_pool5)
    image_fraction: float = 0.0     # not R-CNN's: this share is read exactly as --mode fast reads it,
                                    # Fast R-CNN's own training: groups of one image's windows RoI-pooled
                                    # from its whole conv5 map at their pyramid level (regions.level_pool5)
    rois_per_image: int = 16        # windows per image-and-level group (Fast R-CNN: 64 of each of 2 images)
    checkpoint_every: int = 200     # iterations between resumable saves
    seed: int = 0

    def check(self) -> "FinetuneSettings":
        if self.fast_fraction + self.image_fraction > 1:
            raise ConfigError(f"--fast-fraction {self.fast_fraction} and --image-fraction {self.image_fraction} "
                              "take more than the whole batch: make them add up to 1 at most")
        return self


@dataclass
class Windows:
    """Every training window: its image, box and fine-tuning label (0 = background)."""
    image: torch.Tensor             # int64 (N,)
    boxes: torch.Tensor             # float (N, 4)
    labels: torch.Tensor            # int64 (N,)

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


def build_windows(proposals: list[torch.Tensor], truths: list[tuple[torch.Tensor, torch.Tensor]],
                  settings: FinetuneSettings = FinetuneSettings()) -> Windows:
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


def sample_image_groups(windows: Windows, levels: torch.Tensor, count: int, per_group: int, fg_fraction: float,
                        generator: torch.Generator) -> list[tuple[int, tuple[int, int], torch.Tensor]]:
    """Fast R-CNN's hierarchical sampling (Section 2.3: images first, then RoIs from each),
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


def image_group_pool5(model, windows: Windows, picks: torch.Tensor, level: tuple[int, int], view: Framing,
                      load_image, pre: transforms.Preprocess, device, flip: bool,
                      colour: torch.Generator | None, grid: int) -> torch.Tensor:
    """pool5 of picked windows of one image read as fast mode reads them at `level`: the whole
    (mirrored, recoloured) image's conv5 map, RoI-pooled to `grid` (the conv5 side of a warped
    crop), differentiable."""
    image = load_image(int(windows.image[picks[0]])).to(device)
    x = transforms.normalize(image[None], pre)
    boxes = windows.boxes[picks].to(device)
    if flip:   # the mirrored image, and each box mirrored with it: same size, same level
        x, boxes = x.flip(3), mirror(boxes, x.shape[-1])
    if colour is not None:
        x = recolour(x, pre, colour)
    return level_pool5(model, x, view.windows(boxes, pre.crop_size), level, grid)


def warp_batch(windows: Windows, picks: torch.Tensor, load_image, pre: transforms.Preprocess,
               device, margin: int = 0, framing: Framing = Framing()) -> tuple[torch.Tensor, torch.Tensor]:
    """The warped crops of the picked windows (grouped by image, one warp call each) and their
    labels; `margin`, `framing`: see warp_regions."""
    picks = picks[torch.argsort(windows.image[picks], stable=True)]
    crops = []
    for img in torch.unique_consecutive(windows.image[picks]).tolist():
        mine = picks[windows.image[picks] == img]
        crops.append(warp_regions(load_image(img).to(device), windows.boxes[mine].to(device), pre,
                                  framing, margin=margin))
    return torch.cat(crops), windows.labels[picks].to(device)


def recolour(x: torch.Tensor, pre: transforms.Preprocess, generator: torch.Generator,
             gain: tuple[float, float] = (0.6, 1.4)) -> torch.Tensor:
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


def finetune(model: nn.Module, pre: transforms.Preprocess, windows: Windows, load_image,
             settings: FinetuneSettings = FinetuneSettings(), device="cpu", state_file: Path | None = None,
             on_step=None, key: str = "", framing: Framing = Framing()) -> dict:
    """Fine-tune `model` in place (its head already replaced) on windows read with `framing`;
    resumes from `state_file` when it holds a run with the same settings and `key` (what else
    it depends on: backbone, data, framing), and saves there every checkpoint_every
    iterations. Returns stats."""
    device = torch.device(device)
    model.to(device).train()
    channels_last = device.type == "cpu"   # measured: fwd/bwd 0.29 -> 0.21 s per 128 crops on 2 cores
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    step = max(1, round(settings.iterations * settings.step_fraction))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.1)
    start = 0
    key = json.dumps({"settings": asdict(settings), "run": key}, sort_keys=True)
    if state_file is not None and state_file.exists():
        saved = torch.load(state_file, map_location=device, weights_only=True)
        if saved.get("settings") == key:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            sched.load_state_dict(saved["scheduler"])
            start = int(saved["iteration"])
    loss_fn = nn.CrossEntropyLoss()
    margin = fast_margin(pre.crop_size)
    views = framing.views
    by_image = settings.image_fraction > 0
    if by_image:   # that share in whole groups, as many as fit (one group at least)
        share = settings.batch_size * settings.image_fraction
        per_group = min(settings.rois_per_image, max(1, round(share)))
        n_groups = max(1, int(share // per_group))
        levels = torch.stack([pyramid_levels(windows.boxes, pre, framing=v) for v in views])
        grid = crop_shapes(model, pre)[0]
    recent = []
    for it in range(start, settings.iterations):
        # one generator per iteration: a resumed run draws the batches an unbroken one would
        g = torch.Generator().manual_seed(settings.seed * 1_000_003 + it)
        groups = (sample_image_groups(windows, levels, n_groups, per_group, settings.fg_fraction, g) if by_image
                  else [])   # whole groups of one image and level; the rest of the batch is warped
        picks = sample_batch(windows, replace(settings, batch_size=settings.batch_size - n_groups * per_group)
                             if by_image else settings, g)
        crop_share = (settings.fast_fraction * settings.batch_size / max(1, len(picks)) if by_image
                      else settings.fast_fraction)   # of the warped windows
        read_fast = (torch.rand(len(picks), generator=g) < crop_share if settings.fast_fraction
                     else torch.zeros(len(picks), dtype=torch.bool))   # R-CNN's recipe draws what it always drew
        # a framing of several views: each window is read in one of them, drawn evenly
        view = (torch.randint(len(views), (len(picks),), generator=g) if len(views) > 1
                else torch.zeros(len(picks), dtype=torch.long))
        batch = []   # (crops, labels, margin): per view, the warped windows, then those read as fast mode does
        for v, fast in itertools.product(range(len(views)), (False, True)):
            part = picks[(view == v) & (read_fast == fast)]
            if not len(part):
                continue
            m = margin if fast else 0
            x, y = warp_batch(windows, part, load_image, pre, device, margin=m, framing=views[v])
            if settings.flip:
                flip = (torch.rand(len(x), generator=g) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(3), x)
            if settings.recolour:
                x = recolour(x, pre, g)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batch.append((x, y, m))
        group_flips = (torch.rand(len(groups), generator=g) < 0.5).tolist() if settings.flip else [False] * len(groups)
        # Dropout masks from this iteration's own seed, not the process-wide RNG: whatever ran
        # before (the demo's earlier stages, a resume) the same iteration draws the same masks.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(settings.seed * 1_000_003 + it)
            pool5 = [context_crop_pool5(model, x, pre, m) if m else model.pool5(model.conv5(x)) for x, _, m in batch]
            labels = [y for _, y, _ in batch]
            for (v, level, part), flip in zip(groups, group_flips):
                pool5.append(image_group_pool5(model, windows, part, level, views[v], load_image, pre, device,
                                               flip, g if settings.recolour else None, grid))
                labels.append(windows.labels[part].to(device))
            logits = model.head(torch.cat(pool5), "logits")
            loss = loss_fn(logits, torch.cat(labels))
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        sched.step()
        recent = (recent + [loss.item()])[-50:]
        if on_step:
            on_step(1, sum(recent) / len(recent))
        done = it + 1
        if state_file is not None and (done % settings.checkpoint_every == 0 or done == settings.iterations):
            payload = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                       "scheduler": sched.state_dict(), "iteration": done, "settings": key}
            atomic_write_bytes(state_file, lambda f: torch.save(payload, f))
    model.eval()
    return {"iterations": settings.iterations, "resumed_at": start,
            "final_loss": sum(recent) / len(recent) if recent else None,
            "positives": len(windows.foreground), "background": len(windows.background)}

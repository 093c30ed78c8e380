"""Fast R-CNN (Girshick 2015; docs/references.md): the network itself is the detector. The conv
body runs once per image at one scale, each proposal is max-pooled from the conv5 map to the
pool5 grid (RoI pooling, torchvision's roi_pool), and fc6/fc7 end in two sibling heads: a
softmax over K + 1 classes (background first) and per-class box regression. Both are trained
together with the multi-task loss on mini-batches of 2 images x 64 RoIs; no SVMs, no feature
cache. Settings follow the paper and the released code (lib/fast_rcnn/config.py, the CaffeNet
solver and train.prototxt).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..boxes import box_iou, encode, mirror
from ..data import transforms
from ..errors import TrainingDiverged
from ..fileio import atomic_write_bytes, open_regular
from ..settings import finite, require, setting
from .finetune import best_overlaps, recolour

PAPER_CROP = 227  # the paper's scales are for CaffeNet's 227 px input; other nets scale them
PAPER_IMAGES, PAPER_ITERATIONS = 5011, 40_000  # VOC07 trainval; 30k + 10k iterations (Fast R-CNN §3.1)
BOX_STDS = (0.1, 0.1, 0.2, 0.2)  # regression targets divided by these (config.py BBOX_NORMALIZE_STDS)
MIN_ITERATIONS = 200  # a schedule scaled to a handful of images still learns the new heads


@dataclass(frozen=True)
class FastRCNNSettings:
    iterations: int | None = setting(
        None,
        "SGD iterations. [default: the paper's 40k for VOC07's 5,011 images, scaled to yours]",
        "Fast R-CNN §3.1",
    )
    images_per_batch: int = setting(2, "Images per mini-batch.", "Fast R-CNN §2.3")
    rois_per_image: int = setting(64, "RoIs sampled from each image.", "Fast R-CNN §2.3")
    fg_fraction: float = setting(0.25, "Share of RoIs that overlap an object by IoU >= fg_iou.", "Fast R-CNN §2.3")
    fg_iou: float = setting(0.5, "A RoI is its object's class at IoU >= this.", "Fast R-CNN §2.3")
    bg_iou: tuple[float, float] = setting(
        (0.1, 0.5), "A RoI is background when its best IoU is in [low, high).", "Fast R-CNN §2.3"
    )
    lr: float = setting(0.001, "Learning rate (biases: twice it).", "Fast R-CNN §3.1; train.prototxt lr_mult")
    step_fraction: float = setting(0.75, "lr / 10 after this share of the iterations (30k of 40k).", "Fast R-CNN §3.1")
    momentum: float = setting(0.9, "SGD momentum.", "Fast R-CNN §2.3")
    weight_decay: float = setting(5e-4, "Weight decay (none on biases).", "Fast R-CNN §2.3; train.prototxt decay_mult")
    box_loss_weight: float = setting(1.0, "lambda: weight of the smooth-L1 box loss.", "Fast R-CNN §2.3")
    scales: tuple[int, ...] = setting(
        (600,),
        "Shorter image side in px, in the paper's terms for a 227 px net (scaled by the net's "
        "input / 227: 600 -> 74 at 28 px). Several: a random one per training image, and at test "
        "time each RoI read at the scale where it is nearest the net's input in area.",
        "Fast R-CNN §5.2",
    )
    max_size: int = setting(1000, "Longer image side cap, in the same terms.", "Fast R-CNN config.py MAX_SIZE")
    frozen: int = setting(1, "Conv layers kept fixed from the backbone (conv1 for CaffeNet).", "Fast R-CNN §4.5")
    flip: bool = setting(True, "Mirror half of the training images.", "Fast R-CNN §2.3")
    recolour: bool = setting(
        False,
        "Shuffle and scale each training image's colour channels (not the paper's; as R-CNN's "
        "--recolour): objects in colours the backbone never saw.",
        "finetune.recolour",
    )
    checkpoint_every: int = setting(200, "Iterations between resumable saves.")
    seed: int = setting(0, "Seed of the mini-batches, dropout and the new heads.")

    def check(self) -> FastRCNNSettings:
        require(finite(self.lr) and self.lr > 0, f"--lr must be a finite number above 0, got {self.lr}")
        require(self.iterations is None or self.iterations >= 0, "--iterations must be 0 or more")
        require(self.images_per_batch >= 1 and self.rois_per_image >= 1, "images and RoIs per batch must be positive")
        require(finite(self.fg_fraction, 0, 1), f"fg_fraction must be from 0 to 1, got {self.fg_fraction}")
        low, high = self.bg_iou
        require(0 <= low < high <= self.fg_iou <= 1, f"bg_iou {self.bg_iou} must lie below fg_iou {self.fg_iou}")
        require(self.scales and all(s > 0 for s in self.scales), "--scales must be positive pixel sizes")
        require(self.checkpoint_every >= 1, "checkpoint_every must be 1 or more")
        return self

    def schedule(self, images: int) -> int:
        """The iterations to run on `images` training images."""
        if self.iterations is not None:
            return self.iterations
        return max(MIN_ITERATIONS, round(PAPER_ITERATIONS * images / PAPER_IMAGES))


# --- reading RoIs ------------------------------------------------------------------------


def image_scale(height: int, width: int, scale: int, max_size: int, crop: int) -> float:
    """The factor that brings the shorter side to `scale` (paper px, scaled to the net's
    `crop`) without the longer side passing `max_size` (Fast R-CNN's blob preparation)."""
    ratio = crop / PAPER_CROP
    factor = scale * ratio / min(height, width)
    return min(factor, max_size * ratio / max(height, width))


def scaled_input(image: torch.Tensor, factor: float, pre: transforms.Preprocess) -> torch.Tensor:
    """The normalised (1, 3, h, w) network input of a uint8 (3, H, W) image scaled by `factor`."""
    x = transforms.normalize(image[None], pre)
    h, w = image.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    if size != (h, w):  # bilinear without antialiasing, as the released code's cv2.resize
        x = F.interpolate(x, size=size, mode="bilinear", antialias=False, align_corners=False)
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def pool_grid(model) -> int:
    """The pool5 grid fc6 reads (6 for the paper's net, 3 for alexnet-small)."""
    size = model.avgpool.output_size
    return size[0] if isinstance(size, tuple) else size


def roi_pool5(model, fmap: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
    """Flattened pool5 vectors of `rois` (R, 5: batch index, x1, y1, x2, y2 in input px) max-pooled
    from conv5 maps `fmap` (the RoI pooling layer, Fast R-CNN §2.1)."""
    from torchvision.ops import roi_pool

    pooled = roi_pool(fmap, rois, output_size=pool_grid(model), spatial_scale=1.0 / model.feature_stride)
    return pooled.flatten(1)


def heads_input(model, pool5: torch.Tensor) -> torch.Tensor:
    """fc7 after its dropout, which both sibling layers read (train.prototxt: drop7)."""
    return model.classifier[:-1](pool5)


# --- the two sibling heads ----------------------------------------------------------------


def add_heads(model, num_classes: int, seed: int = 0) -> nn.Linear:
    """Replace the classifier's last layer by a (K + 1)-way one ~ N(0, 0.01) and return the box
    layer, 4 (K + 1) outputs ~ N(0, 0.001), zero biases (Fast R-CNN §2.2)."""
    old = model.classifier[-1]
    g = torch.Generator().manual_seed(seed)
    cls = nn.Linear(old.in_features, num_classes + 1)
    box = nn.Linear(old.in_features, 4 * (num_classes + 1))
    with torch.no_grad():
        cls.weight.copy_(torch.randn(cls.weight.shape, generator=g) * 0.01)
        box.weight.copy_(torch.randn(box.weight.shape, generator=g) * 0.001)
        cls.bias.zero_()
        box.bias.zero_()
    device = old.weight.device
    model.classifier[-1] = cls.to(device)
    return box.to(device)


def unnormalised(box: nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """The box layer's (weight, bias) with the target normalisation folded in, so its outputs
    are boxes.encode deltas (what the released code saves in its snapshots)."""
    stds = torch.tensor(BOX_STDS, device=box.weight.device).repeat(box.out_features // 4)
    return box.weight.detach() * stds[:, None], box.bias.detach() * stds


@torch.no_grad()
def score_rois(
    model,
    box_weight: torch.Tensor,
    box_bias: torch.Tensor,
    image: torch.Tensor,
    boxes: torch.Tensor,
    pre: transforms.Preprocess,
    settings: FastRCNNSettings,
    chunk: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(class probabilities (N, K + 1), box deltas (N, K + 1, 4), boxes.encode's form) of an
    image's boxes: the conv body once per scale in use, each box at the scale nearest the net's
    input in area."""
    device = next(model.parameters()).device
    image, boxes = image.to(device), boxes.float().to(device)
    h, w = image.shape[-2:]
    factors = [image_scale(h, w, s, settings.max_size, pre.crop_size) for s in settings.scales]
    which = _test_scales(boxes, factors, pre.crop_size)
    pool5 = torch.empty(len(boxes), model.pool5_dim, device=device)
    for k, factor in enumerate(factors):
        mine = torch.nonzero(which == k).flatten()
        if len(mine):
            fmap = model.conv5(scaled_input(image, factor, pre))
            rois = torch.cat([torch.zeros(len(mine), 1, device=device), boxes[mine] * factor], 1)
            pool5[mine] = roi_pool5(model, fmap, rois)
    probs, deltas = [], []
    for part in pool5.split(chunk):
        fc7 = heads_input(model, part)
        probs.append(F.softmax(model.classifier[-1](fc7), 1))
        deltas.append(fc7 @ box_weight.T + box_bias)
    probs = torch.cat(probs) if probs else torch.empty(0, model.num_classes, device=device)
    deltas = torch.cat(deltas) if deltas else torch.empty(0, 4 * model.num_classes, device=device)
    return probs, deltas.reshape(len(boxes), probs.shape[1], 4)


def _test_scales(boxes: torch.Tensor, factors: list[float], crop: int) -> torch.Tensor:
    """Per box, the index of the scale at which its area is nearest crop² (Fast R-CNN §5.2)."""
    if len(factors) == 1:
        return torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp_min(1)
    f = torch.tensor(factors, device=boxes.device)
    return (area[:, None] * f[None] ** 2 - crop**2).abs().argmin(1)


# --- training -----------------------------------------------------------------------------


@dataclass
class RoIs:
    """One training image's RoIs (its objects first, then its proposals): the class each is
    trained as (0: background), its best IoU with an object, and its box targets."""

    boxes: torch.Tensor  # float (N, 4)
    labels: torch.Tensor  # int64 (N,)
    overlap: torch.Tensor  # float (N,)
    targets: torch.Tensor  # float (N, 4), normalised by BOX_STDS; zero where labels == 0


def build_rois(proposals, truths, settings: FastRCNNSettings) -> list[RoIs]:
    """Per image: its ground truth and proposals labelled by their best overlap (roidb.py)."""
    out = []
    stds = torch.tensor(BOX_STDS)
    for props, (gt, gt_labels) in zip(proposals, truths):
        boxes = torch.cat([gt.float(), torch.as_tensor(props).float()])
        overlap, cls = best_overlaps(boxes, gt, gt_labels)
        labels = torch.where(overlap >= settings.fg_iou, cls + 1, 0)
        targets = torch.zeros(len(boxes), 4)
        fg = labels > 0
        if fg.any():
            match = box_iou(boxes[fg], gt.float()).argmax(1)
            targets[fg] = encode(boxes[fg], gt.float()[match]) / stds
        out.append(RoIs(boxes, labels, overlap, targets))
    return out


def sample_rois(rois: RoIs, settings: FastRCNNSettings, g: torch.Generator) -> torch.Tensor:
    """One image's share of a mini-batch: up to fg_fraction objects, the rest background in
    bg_iou, each drawn without replacement (minibatch.py _sample_rois)."""
    fg = torch.nonzero(rois.overlap >= settings.fg_iou).flatten()
    low, high = settings.bg_iou
    bg = torch.nonzero((rois.overlap >= low) & (rois.overlap < high)).flatten()
    n_fg = min(round(settings.rois_per_image * settings.fg_fraction), len(fg))
    n_bg = min(settings.rois_per_image - n_fg, len(bg))
    return torch.cat([fg[torch.randperm(len(fg), generator=g)[:n_fg]], bg[torch.randperm(len(bg), generator=g)[:n_bg]]])


def optimizer(model, box: nn.Linear, settings: FastRCNNSettings, iterations: int):
    """SGD with the paper's per-layer rates: weights lr with weight decay, biases 2 lr without,
    the first `frozen` conv layers fixed; lr / 10 after step_fraction of the iterations."""
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    for m in convs[: settings.frozen]:
        m.requires_grad_(False)
    params = [(n, p) for n, p in [*model.named_parameters(), *box.named_parameters(prefix="box")] if p.requires_grad]
    weights = [p for n, p in params if not n.endswith("bias")]
    biases = [p for n, p in params if n.endswith("bias")]
    opt = torch.optim.SGD(
        [
            {"params": weights, "lr": settings.lr, "weight_decay": settings.weight_decay},
            {"params": biases, "lr": 2 * settings.lr, "weight_decay": 0.0},
        ],
        lr=settings.lr,
        momentum=settings.momentum,
    )
    step = max(1, round(iterations * settings.step_fraction))
    return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=step, gamma=0.1)


def multitask_loss(scores, deltas, labels, targets, box_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(log loss, smooth-L1 loss on the true class's box of each object RoI, averaged over
    every RoI of the batch as the released code's SmoothL1Loss layer does) (Fast R-CNN §2.3)."""
    cls = F.cross_entropy(scores, labels)
    fg = torch.nonzero(labels > 0).flatten()
    picked = deltas.reshape(len(deltas), -1, 4)[fg, labels[fg]]
    loc = F.smooth_l1_loss(picked, targets[fg], beta=1.0, reduction="sum") / max(1, len(labels))
    return cls, box_weight * loc


@dataclass
class Trainer:
    """What every iteration reads: the model and its box layer, the RoIs per image, and how
    to load an image."""

    model: nn.Module
    box: nn.Linear
    pre: transforms.Preprocess
    rois: list
    load_image: object
    settings: FastRCNNSettings
    device: torch.device

    def batch(self, g: torch.Generator):
        """(pool5 of the sampled RoIs, their labels, their targets) for one mini-batch."""
        s, crop = self.settings, self.pre.crop_size
        pool5, labels, targets = [], [], []
        for i in torch.randint(len(self.rois), (s.images_per_batch,), generator=g).tolist():
            r = self.rois[i]
            pick = sample_rois(r, s, g)
            scale = s.scales[int(torch.randint(len(s.scales), (1,), generator=g))]
            flip = s.flip and bool(torch.rand(1, generator=g) < 0.5)
            image = self.load_image(i).to(self.device)
            boxes, t = r.boxes[pick].to(self.device), r.targets[pick].to(self.device)
            if flip:  # the mirrored image: boxes mirrored, and their x shift with them
                image, boxes = image.flip(-1), mirror(boxes, image.shape[-1])
                t = t * torch.tensor([-1.0, 1.0, 1.0, 1.0], device=self.device)
            factor = image_scale(*image.shape[-2:], scale, s.max_size, crop)
            x = scaled_input(image, factor, self.pre)
            fmap = self.model.conv5(recolour(x, self.pre, g) if s.recolour else x)
            rois = torch.cat([torch.zeros(len(pick), 1, device=self.device), boxes * factor], 1)
            pool5.append(roi_pool5(self.model, fmap, rois))
            labels.append(r.labels[pick].to(self.device))
            targets.append(t)
        return torch.cat(pool5), torch.cat(labels), torch.cat(targets)

    def step(self, opt, it: int) -> tuple[float, float]:
        """One SGD step from the iteration's own seed (a resumed run draws the same batches and
        dropout masks); returns (log loss, box loss)."""
        seed = self.settings.seed * 1_000_003 + it
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            pool5, labels, targets = self.batch(g)
            fc7 = heads_input(self.model, pool5)
            cls, loc = multitask_loss(
                self.model.classifier[-1](fc7), self.box(fc7), labels, targets, self.settings.box_loss_weight
            )
            loss = cls + loc
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the Fast R-CNN loss became {loss.item()} at iteration {it + 1} "
                    f"(lr {opt.param_groups[0]['lr']:g}): lower --lr; the proposals are kept"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        return cls.item(), loc.item()


def train(
    model,
    pre: transforms.Preprocess,
    proposals,
    truths,
    load_image,
    num_classes: int,
    settings: FastRCNNSettings = FastRCNNSettings(),
    device="cpu",
    state_file=None,
    on_step=None,
    key: str = "",
) -> tuple[nn.Linear, dict]:
    """Train `model` (its classifier's last layer replaced) and a box layer as Fast R-CNN on the
    images' proposals and truths (per image: (boxes, class indices 0..K-1)); resumes from
    `state_file` when it holds a run with the same settings and `key`, saving there every
    checkpoint_every iterations. Returns (the box layer, stats)."""
    device = torch.device(device)
    iterations = settings.schedule(len(proposals))
    box = add_heads(model, num_classes, settings.seed)
    model.to(device).train()
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    trainer = Trainer(model, box, pre, build_rois(proposals, truths, settings), load_image, settings, device)
    key = json.dumps({"settings": asdict(settings), "run": key}, sort_keys=True)
    opt, sched, start = _resume(
        state_file, key, model, box, lambda: optimizer(model, box, settings, iterations), device
    )
    recent = []
    for it in range(start, iterations):
        recent = (recent + [trainer.step(opt, it)])[-50:]
        sched.step()
        if on_step:
            on_step(1, sum(c + b for c, b in recent) / len(recent))
        done = it + 1
        if state_file is not None and (done % settings.checkpoint_every == 0 or done == iterations):
            _save(state_file, key, model, box, opt, sched, done)
    model.eval()
    return box, {
        "iterations": iterations,
        "resumed_at": start,
        "final_cls_loss": _mean(r[0] for r in recent),
        "final_box_loss": _mean(r[1] for r in recent),
        "object_rois": int(sum(int((r.labels > 0).sum()) for r in trainer.rois)),
    }


def _mean(values) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _save(path, key: str, model, box, opt, sched, done: int) -> None:
    payload = {
        "model": model.state_dict(),
        "box": box.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "iteration": done,
        "settings": key,
    }
    atomic_write_bytes(path, lambda f: torch.save(payload, f))


def _resume(path, key: str, model, box, make_optimizer, device):
    """(optimizer, schedule, first iteration): a saved run's, its state loaded, when `path` holds
    one with the same `key`; else fresh ones from 0. A damaged or foreign file starts over with
    the model as it was."""
    opt, sched = make_optimizer()
    if path is None or not path.exists():
        return opt, sched, 0
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (model, box)]
    try:
        with open_regular(path) as f:
            saved = torch.load(f, map_location=device, weights_only=True)
        if saved.get("settings") != key:
            return opt, sched, 0
        model.load_state_dict(saved["model"])
        box.load_state_dict(saved["box"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        return opt, sched, int(saved["iteration"])
    except Exception:  # torch raises several types for truncated or foreign files
        model.load_state_dict(before[0])
        box.load_state_dict(before[1])
        return (*make_optimizer(), 0)


def net_scales(settings: FastRCNNSettings, crop: int) -> list[int]:
    """The scales in the net's own pixels (what the run's first line shows)."""
    return [round(s * crop / PAPER_CROP) for s in settings.scales]

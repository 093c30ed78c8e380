"""`alexsuite train-detector`: R-CNN's training recipe in stages (Girshick et al. 2014,
Section 2.3 and appendices B-C), each cached under OUT/cache so that an interrupted run,
started again with the same command, resumes where it stopped:

1. selective-search proposals per training image  (cache/proposals/, keyed by image content)
2. fine-tuning on warped proposals                  (cache/finetune.pt, every 200 iterations)
3. `layer` and pool5 features of every box          (cache/features/<weights>/, one file per image)
4. one linear SVM per class, hard-negative mining   (positives: ground truth; negatives: IoU < 0.3)
5. one ridge box regressor per class on pool5       (proposals with IoU >= 0.6)
6. the detector directory (detector.py), detector.json written last
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from ..data.decode import decode_image
from ..data.detection_sets import DetectionSet, read_detection_set
from ..devices import resolve_device
from ..embedding import Framing, check_layer
from ..errors import ConfigError, DataError, DiskSpaceError, ImageDecodeError
from ..evaluation.detection import Truth, proposal_recall
from ..fileio import atomic_write_bytes, atomic_write_text, check_free_space, file_sha256
from ..proposals import ProposalSettings, propose
from ..training.checkpoint import load_model, weights_fingerprint
from ..training.run import Reporter
from . import bbox_regression, svm
from .boxes import box_iou
from .detector import TARGET_FEATURE_NORM, Detector, save_detector
from .finetune import BACKGROUND, FinetuneSettings, build_windows, finetune, replace_head
from .regions import head_features, image_tensor, region_pool5

NEGATIVE_IOU = 0.3          # rcnn_train.m: negatives overlap every object of the class < 0.3
FEATURE_STAT_IMAGES = 200   # rcnn_feature_stats: the mean feature norm is taken over a sample of images
IMAGE_MEMORY = 4 << 30      # decoded training images kept in memory during fine-tuning
FEATURE_FILE_OVERHEAD = 4096   # torch.save's zip headers per feature file
DISK_HEADROOM = 1.1         # room asked for beyond the estimate (float16 sizes are exact; headers vary)
FEATURES_VERSION = "v4"     # how features are read (v2: fast mode's pyramid without antialiasing,
                            # v3: its levels sqrt(2) apart, v4: levels padded to hold every window);
                            # a new version never meets cached features of an old one


@dataclass
class DetectorConfig:
    data: str                                  # Pascal VOC directory or COCO .json
    backbone: str                              # checkpoint or run directory (alexsuite train)
    split: str = "train"                       # VOC split to train on
    images: str | None = None                  # COCO: the image folder (default: next to the .json)
    layer: str = "fc7"                         # SVM features (paper: fc7)
    framing: dict = field(default_factory=lambda: asdict(Framing()))   # region read per box (paper: warp, 16 px)
    finetune: dict = field(default_factory=lambda: asdict(FinetuneSettings()))
    svm: dict = field(default_factory=lambda: asdict(svm.SVMSettings()))
    negative_iou: float = NEGATIVE_IOU
    regression_iou: float = bbox_regression.MIN_IOU
    ridge: float = bbox_regression.RIDGE_LAMBDA
    proposals: dict = field(default_factory=lambda: asdict(ProposalSettings()))
    proposal_cache: str | None = None          # default OUT/cache/proposals (content-keyed: safe to share)
    train_fast: bool = True                    # SVMs and regressors also see fast-mode features
    device: str = "auto"
    workers: int = 2


@dataclass
class TrainedDetector:
    out: Path
    detector: Detector
    metrics: dict


FINETUNE_VERSION = "v2"     # how windows are fine-tuned on (v2: --recolour keeps the fill outside the image at 0)


def _finetune_key(backbone_digest: str, data: DetectionSet, windows, framing: Framing) -> str:
    """What a cached fine-tuning run must share with this one to be resumed."""
    h = hashlib.sha256(windows.boxes.float().contiguous().numpy().tobytes())
    h.update(windows.labels.numpy().tobytes())   # every box and label: an edited annotation starts over
    return json.dumps({"backbone_sha256": backbone_digest, "data": data.source, "classes": data.classes,
                       "windows": h.hexdigest()[:16], "version": FINETUNE_VERSION,
                       "framing": asdict(framing)}, sort_keys=True)


def _drop_stale_features(root: Path, keep: set[str]) -> None:
    """Features of earlier fine-tuned weights are never read again."""
    if root.is_dir():
        for d in root.iterdir():
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)


def _image_loader(items, budget: int = IMAGE_MEMORY):
    """uint8 (3, H, W) tensors by image index, the most recent ones kept in memory."""
    per_image = max(1, sum(a.width * a.height * 3 for a in items) // max(len(items), 1))

    @lru_cache(maxsize=max(16, budget // per_image))
    def load(i: int) -> torch.Tensor:
        return image_tensor(decode_image(items[i].image))
    return load


def _features_folder(root: Path, weights: str, layer: str, framing: Framing, mode: str) -> Path:
    """Where one mode's features of one fine-tuned network go (`weights`: its digest, or "*"
    to find any network's)."""
    return root / f"{weights}-{layer}-{FEATURES_VERSION}-{framing.name}-{mode}"


def _feature_file(folder: Path, item, boxes: torch.Tensor) -> Path:
    """Named by the image's content and the boxes read from it: an edited annotation or other
    proposal settings never meet stale features."""
    digest = hashlib.sha256(boxes.float().contiguous().numpy().tobytes()).hexdigest()[:12]
    return folder / f"{file_sha256(item.image)[:20]}-{digest}.pt"


def extract_features(model, pre, items, proposals, truths, layer: str, regression_iou: float,
                     folder: Path, load_image, on_image=None, mode: str = "rcnn",
                     framing: Framing = Framing()) -> list[Path]:
    """Stage 3: per image, `layer` features of every box (ground truth first, then proposals)
    and pool5 features of the boxes near an object (the only ones a regressor trains on),
    read in `mode` (regions.py), stored as float16. Images already done are skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, item in enumerate(items):
        gt, _ = truths[i]
        boxes = torch.cat([gt.float(), torch.as_tensor(proposals[i]).float()])
        file = _feature_file(folder, item, boxes)
        files.append(file)
        if not file.exists():
            pool5 = region_pool5(model, load_image(i), boxes, pre, mode, framing)
            feats = head_features(model, pool5, layer)
            rows = _near_rows(boxes, gt, regression_iou)
            payload = {"boxes": boxes, "gt": torch.tensor(len(gt)), "layer": feats.half().cpu(),
                       "pool5_rows": rows, "pool5": pool5[rows.to(pool5.device)].half().cpu()}
            atomic_write_bytes(file, lambda f: torch.save(payload, f))
        if on_image:
            on_image(1)
    return files


def _near_rows(boxes: torch.Tensor, gt: torch.Tensor, min_iou: float) -> torch.Tensor:
    """Rows of the boxes a regressor may train on: IoU >= min_iou with some object."""
    if not len(gt):
        return torch.zeros(0, dtype=torch.long)
    return torch.nonzero(box_iou(boxes, gt.float()).max(1).values >= min_iou).flatten()


def feature_disk_bytes(items, proposals, truths, regression_iou: float, layer_dim: int, pool5_dim: int,
                       folders: list[Path | None]) -> int:
    """Bytes extract_features will still write into `folders` (one per mode; None: one not
    begun): float16 `layer` rows for every box, pool5 rows for the boxes near an object, for
    each image whose file is not there yet."""
    total = 0
    for i, item in enumerate(items):
        gt = truths[i][0]
        boxes = torch.cat([gt.float(), torch.as_tensor(proposals[i]).float()])
        missing = sum(f is None or not _feature_file(f, item, boxes).exists() for f in folders)
        if missing:
            near = len(_near_rows(boxes, gt, regression_iou))
            per_file = len(boxes) * (2 * layer_dim + 16) + near * (2 * pool5_dim + 8) + FEATURE_FILE_OVERHEAD
            total += missing * per_file
    return total


def _feature_dims(model, layer: str, framing: Framing) -> tuple[int, int]:
    """(`layer` width, pool5 width) of one box's cached features, all views side by side."""
    views = len(framing.views)
    with torch.no_grad():
        x = torch.zeros(1, model.pool5_dim, device=next(model.parameters()).device)
        return model.head(x, layer).shape[1] * views, model.pool5_dim * views


_FREE_SPACE_FIX = ("free some (older detectors' cache/features folders can go) and run the same "
                   "command again: the finished stages are kept")


def _feature_loader(files: list[Path]):
    total = sum(f.stat().st_size for f in files)
    keep_all = total < IMAGE_MEMORY   # a second pass per class: hold them when they fit

    @lru_cache(maxsize=len(files) if keep_all else 8)
    def load(i: int) -> dict:
        return torch.load(files[i], map_location="cpu", weights_only=True)
    return load


def _mean_norm(load, n: int, key: str) -> float:
    norms = [load(i)[key].float().norm(dim=1) for i in range(min(n, FEATURE_STAT_IMAGES))]
    norms = torch.cat([x for x in norms if len(x)]) if any(len(x) for x in norms) else torch.ones(1)
    return float(norms.mean().clamp_min(1e-6))


def train_svms(loads, n: int, truths, num_classes: int, scale: float, settings: svm.SVMSettings,
               negative_iou: float, on_class=None):
    """Stage 4: one SVM per class, one pass of hard-negative mining over the training images.
    `loads`: one feature loader per test mode; each image's boxes count once per mode."""
    weights, biases, stats = [], [], []
    for c in range(num_classes):
        positives = torch.cat([load(i)["layer"][:int(load(i)["gt"])][truths[i][1] == c].float()
                               for load in loads for i in range(n)]) * scale

        def negatives(c=c):
            for i in range(n):
                gt_c = truths[i][0][truths[i][1] == c].float()
                chunks = []
                for load in loads:
                    f = load(i)
                    g = int(f["gt"])
                    props, feats = f["boxes"][g:], f["layer"][g:]
                    if len(gt_c) and len(props):
                        feats = feats[box_iou(props, gt_c).max(1).values < negative_iou]
                    chunks.append(feats.float() * scale)
                yield torch.cat(chunks)
        if not len(positives):
            weights.append(torch.zeros(positives.shape[1]))
            biases.append(-10.0)           # a class with no training objects never fires
            stats.append({"positives": 0})
        else:
            model, st = svm.train_with_hard_negatives(positives, negatives(), settings)
            weights.append(model.weight)
            biases.append(model.bias)
            stats.append({"positives": len(positives), **st})
        if on_class:
            on_class(1)
    return torch.stack(weights), torch.tensor(biases), stats


def train_regressors(loads, n: int, truths, num_classes: int, scale: float, min_iou: float, ridge: float):
    """Stage 5: per class, ridge regression from pool5 to the box targets."""
    weights, biases, pairs = [], [], []
    dim = int(loads[0](0)["pool5"].shape[1])
    for c in range(num_classes):
        xs, ts = [], []
        for load in loads:
            for i in range(n):
                f = load(i)
                gt_c = truths[i][0][truths[i][1] == c].float()
                if not len(gt_c) or not len(f["pool5_rows"]):
                    continue
                keep, targets = bbox_regression.training_pairs(f["boxes"][f["pool5_rows"]], gt_c, min_iou)
                xs.append(f["pool5"][keep].float() * scale)
                ts.append(targets)
        x = torch.cat(xs) if xs else torch.empty(0, dim)
        if len(x) < 2:
            weights.append(torch.zeros(dim, 4))
            biases.append(torch.zeros(4))
        else:
            r = bbox_regression.fit(x, torch.cat(ts), ridge)
            weights.append(r.weight)
            biases.append(r.bias)
        pairs.append(len(x))
    return torch.stack(weights), torch.stack(biases), pairs


def _truths(data: DetectionSet, classes: list[str]):
    index = {c: i for i, c in enumerate(classes)}
    return [(a.boxes, torch.tensor([index[lab] for lab in a.labels], dtype=torch.long)) for a in data.items]


def train_detector(cfg: DetectorConfig, out: Path, reporter: Reporter = Reporter()) -> TrainedDetector:
    out = Path(out)
    check_layer(cfg.layer)
    ft = FinetuneSettings(**cfg.finetune).check()
    svm_settings = svm.SVMSettings(**cfg.svm)
    framing = Framing(**cfg.framing).check()
    prop_settings = ProposalSettings(**cfg.proposals).check()
    device = resolve_device(cfg.device)
    data = read_detection_set(cfg.data, cfg.split, cfg.images)
    if not data.classes:
        raise DataError(f"{data.source}: no objects annotated, nothing to learn")
    if data.clipped or data.dropped:
        reporter.warn(f"{data.clipped} boxes reached outside their image and were clipped, "
                      f"{data.dropped} had no area left and were dropped")
    loaded = load_model(cfg.backbone, device)
    if loaded.preprocess.crop_size < 16:
        raise ConfigError(f"{cfg.backbone}: input size {loaded.preprocess.crop_size} px is too small to warp regions")
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    timings = {}

    # 1. proposals
    t0 = time.perf_counter()
    reporter.note(f"{len(data)} training images, {len(data.classes)} classes: {', '.join(data.classes)}")
    bar = reporter.progress(len(data), "proposals")
    boxes = propose([a.image for a in data.items], prop_settings, cfg.proposal_cache or cache / "proposals",
                    cfg.workers, on_image=bar)
    bar.close()
    bad = [b for b in boxes if isinstance(b, ImageDecodeError)]
    for e in bad[:5]:
        reporter.warn(f"skipped: {e}")
    if bad:
        reporter.warn(f"{len(bad)} unreadable training images skipped")
    good = [i for i, b in enumerate(boxes) if not isinstance(b, ImageDecodeError)]
    if not good:
        raise DataError(f"{data.source}: none of the training images could be read")
    items = [data.items[i] for i in good]
    proposals = [torch.from_numpy(boxes[i]) for i in good]
    kept = DetectionSet(items, data.classes, data.source)
    truths = _truths(kept, data.classes)
    recall = proposal_recall(proposals, [Truth(a.boxes, t[1], a.difficult) for a, t in zip(items, truths)])
    timings["proposals"] = time.perf_counter() - t0

    # Say now, not after fine-tuning, when the features stage will not fit on the disk.
    modes = ("rcnn", "fast") if cfg.train_fast else ("rcnn",)
    layer_dim, pool5_dim = _feature_dims(loaded.model, cfg.layer, framing)
    # A resumed run counts what an earlier one already wrote; the folder's full name (the
    # fine-tuned weights' digest first) is only known after fine-tuning.
    wanted = [_features_folder(cache / "features", "*", cfg.layer, framing, m) for m in modes]
    begun = [next(iter(sorted(w.parent.glob(w.name))), None) for w in wanted]
    need = feature_disk_bytes(items, proposals, truths, cfg.regression_iou, layer_dim, pool5_dim, begun)
    try:
        check_free_space(cache / "features", round(need * DISK_HEADROOM), "the features",
                         "fine-tuning goes on, but the features stage will stop there unless space is freed")
    except DiskSpaceError as e:
        reporter.warn(str(e))

    # 2. fine-tuning
    t0 = time.perf_counter()
    model = loaded.model
    replace_head(model, len(data.classes) + 1, ft.seed)
    windows = build_windows(proposals, truths, ft)
    load_image = _image_loader(items)
    reporter.note(f"fine-tuning {loaded.arch} on {len(windows.foreground):,} positive and "
                  f"{len(windows.background):,} background windows, {ft.iterations} iterations of {ft.batch_size}")
    bar = reporter.progress(ft.iterations, "fine-tune")
    ft_stats = finetune(model, loaded.preprocess, windows, load_image, ft, device, cache / "finetune.pt",
                        on_step=bar, key=_finetune_key(file_sha256(loaded.source), kept, windows, framing),
                        framing=framing)
    bar.close()
    timings["finetune"] = time.perf_counter() - t0

    # 3. features, in each mode the heads will serve
    t0 = time.perf_counter()
    weights = weights_fingerprint(model)
    folders = [_features_folder(cache / "features", weights, cfg.layer, framing, m) for m in modes]
    _drop_stale_features(cache / "features", {f.name for f in folders})
    need = feature_disk_bytes(items, proposals, truths, cfg.regression_iou, layer_dim, pool5_dim, folders)
    check_free_space(cache / "features", round(need * DISK_HEADROOM), "the features", _FREE_SPACE_FIX)
    loads = []
    for mode, folder in zip(modes, folders):
        bar = reporter.progress(len(items), f"features ({mode})")
        files = extract_features(model, loaded.preprocess, items, proposals, truths, cfg.layer,
                                 cfg.regression_iou, folder, load_image,
                                 on_image=bar, mode=mode, framing=framing)
        bar.close()
        loads.append(_feature_loader(files))
    load_image.cache_clear()
    # the paper's scaling, from its own (rcnn) features: one scale serves both modes
    feature_scale = TARGET_FEATURE_NORM / _mean_norm(loads[0], len(items), "layer")
    pool5_scale = TARGET_FEATURE_NORM / _mean_norm(loads[0], len(items), "pool5")
    timings["features"] = time.perf_counter() - t0

    # 4. SVMs
    t0 = time.perf_counter()
    bar = reporter.progress(len(data.classes), "SVMs")
    svm_w, svm_b, svm_stats = train_svms(loads, len(items), truths, len(data.classes), feature_scale,
                                         svm_settings, cfg.negative_iou, on_class=bar)
    bar.close()
    timings["svms"] = time.perf_counter() - t0

    # 5. box regressors
    t0 = time.perf_counter()
    reg_w, reg_b, pairs = train_regressors(loads, len(items), truths, len(data.classes), pool5_scale,
                                           cfg.regression_iou, cfg.ridge)
    timings["regressors"] = time.perf_counter() - t0

    metrics = {"training_images": len(items), "skipped_images": len(bad), "clipped_boxes": data.clipped,
               "dropped_boxes": data.dropped, "proposal_recall": recall, "finetune": ft_stats,
               "svms": dict(zip(data.classes, svm_stats)), "regression_pairs": dict(zip(data.classes, pairs)),
               "seconds": timings}
    checkpoint = {k: loaded.checkpoint[k] for k in ("arch", "preprocess", "config") if k in loaded.checkpoint}
    checkpoint.update(arch=loaded.arch, classes=[BACKGROUND, *data.classes],
                      preprocess=json.dumps(loaded.preprocess.to_dict()))
    det = Detector(model.eval(), loaded.preprocess, list(data.classes), cfg.layer, feature_scale, pool5_scale,
                   svm_w.to(device), svm_b.to(device), reg_w.to(device), reg_b.to(device),
                   info={"config": asdict(cfg), "backbone_source": str(loaded.source), "metrics": metrics},
                   framing=framing)
    save_detector(det, out, checkpoint)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))
    return TrainedDetector(out, det, metrics)

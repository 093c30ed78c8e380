"""`alexsuite train-detector`: R-CNN's training recipe (R-CNN §2.3, appendices B-C;
docs/references.md) as named stages, each cached under OUT/cache so that an interrupted run,
started again with the same command, resumes where it stopped:

1. selective-search proposals per training image  (cache/proposals/, keyed by image content)
2. fine-tuning on warped proposals                  (cache/finetune.pt, every 200 iterations)
3. `layer` and pool5 features of every box          (cache/features/<weights>/, one file per image)
4. one linear SVM per class, hard-negative mining   (positives: ground truth; negatives: IoU < 0.3)
5. one ridge box regressor per class on pool5       (proposals with IoU >= 0.6)
6. Platt scaling of the SVM scores, per class and test mode, fitted on held-out folds (calibration.py)
7. the detector directory (detector.py), detector.json written last
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..boxes import Truth
from ..data.detection_sets import DetectionSet, read_detection_set
from ..devices import resolve_device
from ..embedding import LAYERS, check_layer
from ..errors import ConfigError, DataError, DiskSpaceError, ImageDecodeError
from ..evaluation.detection import proposal_recall
from ..fileio import atomic_write_text, check_free_space, file_sha256
from ..models.checkpoint import LoadedModel, load_model, weights_fingerprint
from ..proposals import propose
from ..reporting import Reporter
from ..settings import default_of
from . import fast_rcnn
from . import features as feature_cache
from .calibration import fit_classes, fold_of, held_out_detections
from .config import METHODS, DetectorConfig
from .detector import TARGET_FEATURE_NORM, Detector, save_detector
from .fast_rcnn_detector import METHOD as FAST_RCNN
from .fast_rcnn_detector import FastRCNNDetector
from .finetune import BACKGROUND, build_windows, finetune, replace_head
from .framing import Framing
from .heads import train_regressors, train_svms

FINETUNE_VERSION = "v2"  # how windows are fine-tuned on (CHANGELOG.md); another version starts over


@dataclass
class TrainedDetector:
    out: Path
    detector: Detector
    metrics: dict


@dataclass
class _Run:
    """What the stages hand on: the inputs, the training images that could be read, and results."""

    cfg: DetectorConfig
    out: Path
    data: DetectionSet
    loaded: LoadedModel
    device: torch.device
    reporter: Reporter
    items: list = field(default_factory=list)  # readable training images (Annotation)
    proposals: list = field(default_factory=list)  # their boxes, (N, 4) each
    truths: list = field(default_factory=list)  # their (boxes, class indices)
    load_image: object = None  # image loader shared by fine-tuning and features
    metrics: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    @property
    def modes(self) -> tuple[str, ...]:
        return ("rcnn", "fast") if self.cfg.train_fast else ("rcnn",)

    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] = time.perf_counter() - start


def train_detector(cfg: DetectorConfig, out: Path, reporter: Reporter = Reporter()) -> TrainedDetector:
    run = _open(cfg, Path(out), reporter)
    _advise_on_a_scratch_backbone(run)
    with run.timed("proposals"):
        _proposals(run)
    if cfg.method == FAST_RCNN:
        with run.timed("fast_rcnn"):
            box = _fast_rcnn(run)
        return _write_fast_rcnn(run, box)
    _warn_if_features_will_not_fit(run)
    with run.timed("finetune"):
        _finetune(run)
    with run.timed("features"):
        loads, scales = _features(run)
    with run.timed("svms"):
        svms = _svms(run, loads, scales[0])
    with run.timed("regressors"):
        regressors = train_regressors(
            loads, len(run.items), run.truths, len(run.data.classes), scales[1], cfg.regression_iou, cfg.ridge
        )
    with run.timed("calibration"):
        calibration = _calibrate(run, loads, scales)
    return _write(run, svms, regressors, scales, calibration)


def _open(cfg: DetectorConfig, out: Path, reporter: Reporter) -> _Run:
    """Check the settings, read the data and the backbone: nothing is written before this passes."""
    check_layer(cfg.layer, LAYERS)
    cfg.finetune.check()
    cfg.framing.check()
    cfg.proposals.check()
    cfg.svm.check()
    cfg.calibration.check()
    cfg.fast_rcnn.check()
    if cfg.method not in METHODS:
        raise ConfigError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    device = resolve_device(cfg.device)
    data = read_detection_set(cfg.data, cfg.split, cfg.images)
    if not data.classes:
        raise DataError(f"{data.source}: no objects annotated, nothing to learn")
    if data.clipped or data.dropped:
        reporter.warn(
            f"{data.clipped} boxes reached outside their image and were clipped, "
            f"{data.dropped} had no area left and were dropped"
        )
    _check_out(out)
    loaded = load_model(cfg.backbone, device)
    if loaded.preprocess.crop_size < 16:
        raise ConfigError(f"{cfg.backbone}: input size {loaded.preprocess.crop_size} px is too small to warp regions")
    (out / "cache").mkdir(parents=True, exist_ok=True)
    return _Run(cfg, out, data, loaded, device, reporter)


# What works on a backbone `alexsuite train` trained from scratch, far from the images it will
# detect on (docs/detection.md, "Recipes on scenes-dev"); the paper's settings assume ImageNet.
SCRATCH_RECIPE = {
    "rcnn": "--lr 0.04 --finetune-iters 4000 --recolour --fast-fraction 0.5",
    "fast-rcnn": "--lr 0.01, and --scales/--max-size that make your objects about the net's input "
    "(scenes-dev: --scales 1800 --max-size 3000)",
}


def from_scratch(loaded: LoadedModel) -> bool:
    """Whether the backbone is an `alexsuite train` run that started from random weights."""
    try:
        cfg = json.loads(loaded.checkpoint.get("config") or "null")
    except (TypeError, ValueError):
        return False
    return isinstance(cfg, dict) and not cfg.get("weights") and not cfg.get("pretrained")


def _advise_on_a_scratch_backbone(run: _Run) -> None:
    """One line, when the paper's fine-tuning rate meets a backbone trained from scratch here."""
    cfg = run.cfg
    recipe = SCRATCH_RECIPE.get(cfg.method)
    settings = cfg.fast_rcnn if cfg.method == FAST_RCNN else cfg.finetune  # whose lr trains this method
    if recipe and settings.lr == default_of(type(settings), "lr") and from_scratch(run.loaded):
        run.reporter.warn(
            f"{cfg.backbone} was trained from scratch, and the paper's fine-tuning settings assume "
            f"ImageNet weights: for such a backbone pass {recipe} (docs/detection.md)"
        )


DETECTOR_NAMES = {"detector.json", "backbone.pt", "heads.pt", "metrics.json", "cache"}


def _check_out(out: Path) -> None:
    """A detector is written into a new folder or its own (to resume), never over other files."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: a file is in the way; give a folder")
    foreign = sorted(n for n in os.listdir(out) if n not in DETECTOR_NAMES and not n.startswith("."))
    if foreign:
        raise ConfigError(f"--out {out}: this folder holds other files ({', '.join(foreign[:3])}); give a new folder")


def _proposals(run: _Run) -> None:
    """Stage 1: selective search over every training image; unreadable ones are skipped."""
    data, reporter = run.data, run.reporter
    reporter.note(f"{len(data)} training images, {len(data.classes)} classes: {', '.join(data.classes)}")
    with closing(reporter.progress(len(data), "proposals")) as bar:
        boxes = propose(
            [a.image for a in data.items],
            run.cfg.proposals,
            run.cfg.proposal_cache or run.cache / "proposals",
            run.cfg.workers,
            on_image=bar,
        )
    bad = [b for b in boxes if isinstance(b, ImageDecodeError)]
    for e in bad[:5]:
        reporter.warn(f"skipped: {e}")
    if bad:
        reporter.warn(f"{len(bad)} unreadable training images skipped")
    good = [i for i, b in enumerate(boxes) if not isinstance(b, ImageDecodeError)]
    if not good:
        raise DataError(f"{data.source}: none of the training images could be read")
    run.items = [data.items[i] for i in good]
    run.proposals = [torch.from_numpy(boxes[i]) for i in good]
    run.truths = _truths(run.items, data.classes)
    seen = set(torch.cat([labels for _, labels in run.truths]).tolist())
    unseen = [c for i, c in enumerate(data.classes) if i not in seen]
    if unseen:  # a COCO category without annotations, or whose images could not be read
        reporter.warn(f"no training objects of {', '.join(unseen)}: the detector will never find them")
    truth = [Truth(a.boxes, t[1], a.difficult) for a, t in zip(run.items, run.truths)]
    run.metrics.update(
        training_images=len(run.items),
        skipped_images=len(bad),
        clipped_boxes=data.clipped,
        dropped_boxes=data.dropped,
        proposal_recall=proposal_recall(run.proposals, truth),
    )


def _truths(items, classes: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    index = {c: i for i, c in enumerate(classes)}
    return [(a.boxes, torch.tensor([index[lab] for lab in a.labels], dtype=torch.long)) for a in items]


def _feature_bytes(run: _Run, folders) -> int:
    """Bytes the features stage will still write into `folders` (one per mode; None: not begun)."""
    layer_dim, pool5_dim = feature_cache.feature_dims(run.loaded.model, run.cfg.layer, run.cfg.framing)
    need = feature_cache.feature_disk_bytes(
        run.items, run.proposals, run.truths, run.cfg.regression_iou, layer_dim, pool5_dim, folders
    )
    return round(need * feature_cache.DISK_HEADROOM)


def _warn_if_features_will_not_fit(run: _Run) -> None:
    """Say now, not after fine-tuning, when the features stage will not fit on the disk. A
    resumed run counts what an earlier one wrote; the folders' full names (the fine-tuned
    weights' digest first) are only known after fine-tuning."""
    wanted = [
        feature_cache.features_folder(run.cache / "features", "*", run.cfg.layer, run.cfg.framing, m) for m in run.modes
    ]
    begun = [next(iter(sorted(w.parent.glob(w.name))), None) for w in wanted]
    try:
        check_free_space(
            run.cache / "features",
            _feature_bytes(run, begun),
            "the features",
            "fine-tuning goes on, but the features stage will stop there unless space is freed",
        )
    except DiskSpaceError as e:
        run.reporter.warn(str(e))


def _finetune(run: _Run) -> None:
    """Stage 2: the backbone's classifier replaced by a (K + 1)-way one and fine-tuned on windows."""
    cfg, ft = run.cfg, run.cfg.finetune
    model = run.loaded.model
    replace_head(model, len(run.data.classes) + 1, ft.seed)
    windows = build_windows(run.proposals, run.truths, ft)
    run.load_image = feature_cache.image_loader(run.items)
    run.reporter.note(
        f"fine-tuning {run.loaded.arch} on {len(windows.foreground):,} positive and "
        f"{len(windows.background):,} background windows, {ft.iterations} iterations of {ft.batch_size}"
    )
    kept = DetectionSet(run.items, run.data.classes, run.data.source)
    key = _finetune_key(file_sha256(run.loaded.source), kept, windows, cfg.framing)
    with closing(run.reporter.progress(ft.iterations, "fine-tune")) as bar:
        run.metrics["finetune"] = finetune(
            model,
            run.loaded.preprocess,
            windows,
            run.load_image,
            ft,
            run.device,
            run.cache / "finetune.pt",
            on_step=bar,
            key=key,
            framing=cfg.framing,
        )


def _finetune_key(backbone_digest: str, data: DetectionSet, windows, framing: Framing) -> str:
    """What a cached fine-tuning run must share with this one to be resumed."""
    digest = _digest([windows.boxes.float(), windows.labels])  # an edited annotation starts over
    return _resume_key(backbone_digest, data, windows=digest, version=FINETUNE_VERSION, framing=asdict(framing))


def _resume_key(backbone_digest: str, data: DetectionSet, **what) -> str:
    """A training stage's resume key: the backbone, the data and what else the stage trains on."""
    return json.dumps(
        {"backbone_sha256": backbone_digest, "data": data.source, "classes": data.classes, **what},
        sort_keys=True,
    )


def _digest(tensors) -> str:
    """A short hash of every tensor's bytes, in order."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _features(run: _Run):
    """Stage 3: features in each mode the heads will serve; returns their loaders and the
    (layer, pool5) scales that bring the mean norm to R-CNN's 20 (rcnn_feature_stats.m),
    taken from rcnn mode's features: one scale serves both modes."""
    cfg, model = run.cfg, run.loaded.model
    weights = weights_fingerprint(model)
    folders = [
        feature_cache.features_folder(run.cache / "features", weights, cfg.layer, cfg.framing, m) for m in run.modes
    ]
    feature_cache.drop_stale_features(run.cache / "features", {f.name for f in folders})
    check_free_space(run.cache / "features", _feature_bytes(run, folders), "the features", feature_cache.FREE_SPACE_FIX)
    loads = []
    for mode, folder in zip(run.modes, folders):
        with closing(run.reporter.progress(len(run.items), f"features ({mode})")) as bar:
            files = feature_cache.extract_features(
                model,
                run.loaded.preprocess,
                run.items,
                run.proposals,
                run.truths,
                cfg.layer,
                cfg.regression_iou,
                folder,
                run.load_image,
                on_image=bar,
                mode=mode,
                framing=cfg.framing,
            )
        loads.append(feature_cache.feature_loader(files))
    run.load_image.cache_clear()
    scales = tuple(
        TARGET_FEATURE_NORM / feature_cache.mean_norm(loads[0], len(run.items), key) for key in ("layer", "pool5")
    )
    return loads, scales


def _svms(run: _Run, loads, scale: float):
    """Stage 4: one SVM per class over both modes' features."""
    classes = run.data.classes
    with closing(run.reporter.progress(len(classes), "SVMs")) as bar:
        weight, bias, stats = train_svms(
            loads, len(run.items), run.truths, len(classes), scale, run.cfg.svm, run.cfg.negative_iou, on_class=bar
        )
    run.metrics["svms"] = dict(zip(classes, stats))
    return weight, bias


def _calibrate(run: _Run, loads, scales) -> dict:
    """Stage 6: per test mode, (K, 2) Platt parameters fitted on each fold's detections by the
    SVMs and regressors trained on the other folds; none (raw scores) when that cannot be done."""
    settings, classes, n = run.cfg.calibration, run.data.classes, len(run.items)
    folds = len(fold_of(n, settings.folds)) if settings.folds else 0
    run.metrics["calibration"] = {"folds": folds}
    if folds < 2:
        if settings.folds:
            run.reporter.warn("one training image cannot be split into folds: scores stay raw SVM scores")
        return {}
    with closing(run.reporter.progress(folds * len(classes), "calibration")) as bar:
        held = held_out_detections(loads, run.items, run.truths, len(classes), scales, run.cfg, on_class=bar)
    params = {}
    for mode, per_class in zip(run.modes, held):
        if not any(len(scores) for scores, _ in per_class):
            run.reporter.warn(f"no held-out detections in {mode} mode: its scores stay raw SVM scores")
            continue
        params[mode], run.metrics["calibration"][mode] = fit_classes(per_class, classes, settings)
    return params


def _fast_rcnn(run: _Run):
    """Fast R-CNN's one training stage: the network and its box layer end to end on the
    proposals (fast_rcnn.py), resumable from cache/fast_rcnn.pt; returns the box layer."""
    cfg, loaded = run.cfg, run.loaded
    settings = cfg.fast_rcnn
    iterations = settings.schedule(len(run.items))
    run.load_image = feature_cache.image_loader(run.items)
    scales = fast_rcnn.net_scales(settings, loaded.preprocess.crop_size)
    run.reporter.note(
        f"Fast R-CNN: {loaded.arch}, {iterations} iterations of {settings.images_per_batch} images x "
        f"{settings.rois_per_image} RoIs, images scaled to {', '.join(map(str, scales))} px (shorter side)"
    )
    key = _fast_rcnn_key(run)
    with closing(run.reporter.progress(iterations, "Fast R-CNN")) as bar:
        box, run.metrics["fast_rcnn"] = fast_rcnn.train(
            loaded.model,
            loaded.preprocess,
            run.proposals,
            run.truths,
            run.load_image,
            len(run.data.classes),
            settings,
            run.device,
            run.cache / "fast_rcnn.pt",
            on_step=bar,
            key=key,
        )
    return box


def _fast_rcnn_key(run: _Run) -> str:
    """What a cached Fast R-CNN run must share with this one to be resumed: as _finetune_key,
    every training box, label and proposal (an edited annotation starts over)."""
    tensors = [t for (boxes, labels), p in zip(run.truths, run.proposals) for t in (boxes.float(), labels, p.float())]
    return _resume_key(file_sha256(run.loaded.source), run.data, boxes=_digest(tensors))


def _write_fast_rcnn(run: _Run, box) -> TrainedDetector:
    """The detector directory of a Fast R-CNN run, detector.json last."""
    loaded, classes = run.loaded, run.data.classes
    keys = ("training_images", "skipped_images", "clipped_boxes", "dropped_boxes", "proposal_recall", "fast_rcnn")
    metrics = {**{k: run.metrics[k] for k in keys}, "seconds": run.seconds}
    weight, bias = fast_rcnn.unnormalised(box)
    det = FastRCNNDetector(
        loaded.model.eval(),
        loaded.preprocess,
        list(classes),
        weight,
        bias,
        run.cfg.fast_rcnn,
        info={"config": asdict(run.cfg), "backbone_source": str(loaded.source), "metrics": metrics},
        config=run.cfg,
    )
    return _save(run, det, metrics)


def _save(run: _Run, det: Detector | FastRCNNDetector, metrics: dict) -> TrainedDetector:
    """Either method's detector directory (detector.json last) and metrics.json beside it;
    backbone.pt keeps the backbone's own record, its classes now background and the detector's."""
    loaded = run.loaded
    checkpoint = {k: loaded.checkpoint[k] for k in ("arch", "preprocess", "config") if k in loaded.checkpoint}
    checkpoint.update(
        arch=loaded.arch, classes=[BACKGROUND, *det.classes], preprocess=json.dumps(loaded.preprocess.to_dict())
    )
    save_detector(det, run.out, checkpoint)
    atomic_write_text(run.out / "metrics.json", json.dumps(metrics, indent=2))
    return TrainedDetector(run.out, det, metrics)


def _write(run: _Run, svms, regressors, scales, calibration: dict) -> TrainedDetector:
    """Stage 7: the detector directory, detector.json last, and metrics.json beside it."""
    (svm_w, svm_b), (reg_w, reg_b, pairs) = svms, regressors
    classes, loaded, device = run.data.classes, run.loaded, run.device
    metrics = {**run.metrics, "regression_pairs": dict(zip(classes, pairs)), "seconds": run.seconds}
    metrics = {
        k: metrics[k]
        for k in (
            "training_images",
            "skipped_images",
            "clipped_boxes",
            "dropped_boxes",
            "proposal_recall",
            "finetune",
            "svms",
            "regression_pairs",
            "calibration",
            "seconds",
        )
    }
    det = Detector(
        loaded.model.eval(),
        loaded.preprocess,
        list(classes),
        run.cfg.layer,
        scales[0],
        scales[1],
        svm_w.to(device),
        svm_b.to(device),
        reg_w.to(device),
        reg_b.to(device),
        info={"config": asdict(run.cfg), "backbone_source": str(loaded.source), "metrics": metrics},
        framing=run.cfg.framing,
        config=run.cfg,
        calibration={mode: p.to(device) for mode, p in calibration.items()},
    )
    return _save(run, det, metrics)

"""A trained R-CNN detector: the fine-tuned backbone, one linear SVM per class on `layer`
features, one ridge box regressor per class on pool5 features, Platt scaling of the SVM scores
into probabilities per class and test mode (calibration.py), and how to run them on an image
(R-CNN §2.2 "test-time detection"; docs/references.md).

On disk it is a directory:
    detector.json   format, classes, layer, feature scales, settings, metrics, and the sha256
                    of the two weight files (written last: a directory without it is unfinished)
    backbone.pt     the fine-tuned network, an alexsuite checkpoint (loads weights-only)
    heads.pt        SVM, regressor and calibration weights, plain tensors (loads weights-only)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..boxes import MAX_PER_CLASS, NMS_IOU, Detections, select_per_class, valid
from ..boxes import mirror as mirror_boxes
from ..data.transforms import Preprocess
from ..embedding import LAYERS
from ..errors import CheckpointError, ConfigError
from ..fileio import atomic_write_bytes, atomic_write_text, file_sha256
from ..models.checkpoint import load_model, save_checkpoint
from ..settings import from_dict
from .calibration import logits, threshold_logit
from .config import DetectorConfig
from .fast_rcnn import FastRCNNSettings
from .fast_rcnn_detector import METHOD as FAST_RCNN
from .fast_rcnn_detector import FastRCNNDetector
from .features import feature_dims
from .framing import Framing
from .regions import MODES, head_features, region_pool5

FORMAT = "alexsuite-detector/1"
TARGET_FEATURE_NORM = 20.0  # features scaled to this mean L2 norm for the SVMs (rcnn_feature_stats.m)


@dataclass
class Detector:
    model: torch.nn.Module  # fine-tuned, (K + 1)-way head, eval mode
    preprocess: Preprocess
    classes: list[str]  # K object classes (no background)
    layer: str  # SVM features: fc7 (paper), fc6 or pool5
    feature_scale: float  # multiplies `layer` features (mean norm -> 20)
    pool5_scale: float  # multiplies pool5 features for the regressors
    svm_weight: torch.Tensor  # (K, D)
    svm_bias: torch.Tensor  # (K,)
    reg_weight: torch.Tensor | None = None  # (K, D5, 4)
    reg_bias: torch.Tensor | None = None  # (K, 4)
    info: dict = field(default_factory=dict)
    framing: Framing = Framing()  # the region each box is read from, as in training
    config: DetectorConfig | None = None  # the settings it was trained with (None: not recorded)
    calibration: dict = field(default_factory=dict)  # test mode -> (K, 2) Platt (a, b) per class

    def calibrated(self, mode: str = "rcnn") -> bool:
        """Whether its scores in `mode` are probabilities (else raw SVM scores: trained before
        calibration, with --calibration-folds 0, or rcnn features only and read in fast mode)."""
        return mode in self.calibration

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def score(self, image: torch.Tensor, proposals: torch.Tensor, mode: str = "rcnn", mirror: bool = False):
        """(boxes kept, SVM scores (N, K), pool5 features (N, D5)) of an image's proposals.
        mirror: also read the mirrored image's mirrored boxes and score the mean of the two
        feature vectors (not R-CNN's: AlexNet's test-time reflections, AlexNet §4.1, twice
        the network time); the box regressors read the unmirrored pool5."""
        boxes = proposals.float().to(self.device)
        boxes = boxes[valid(boxes)]
        pool5 = region_pool5(self.model, image, boxes, self.preprocess, mode, self.framing)
        feats = head_features(self.model, pool5, self.layer)
        if mirror:
            pool5_m = region_pool5(
                self.model, image.flip(-1), mirror_boxes(boxes, image.shape[-1]), self.preprocess, mode, self.framing
            )
            feats = (feats + head_features(self.model, pool5_m, self.layer)) / 2
        return boxes, feats * self.feature_scale @ self.svm_weight.T + self.svm_bias, pool5

    @torch.no_grad()
    def detect(
        self,
        image: torch.Tensor,
        proposals: torch.Tensor,
        mode: str = "rcnn",
        threshold: float = 0.5,
        nms: float = NMS_IOU,
        regress: bool = True,
        max_per_class: int = MAX_PER_CLASS,
        mirror: bool = False,
    ) -> Detections:
        """Detections of one uint8 (3, H, W) image from its proposals."""
        boxes, scores, pool5 = self.score(image, proposals, mode, mirror)
        return self.select(
            boxes, scores, pool5, image.shape[-1], image.shape[-2], threshold, nms, regress, max_per_class, mode
        )

    @torch.no_grad()
    def select(
        self,
        boxes,
        scores,
        pool5,
        width: int,
        height: int,
        threshold: float = 0.5,
        nms: float = NMS_IOU,
        regress: bool = True,
        max_per_class: int = MAX_PER_CLASS,
        mode: str = "rcnn",
    ) -> Detections:
        """From score()'s output: per class, the boxes whose probability of being right is above
        `threshold` (at most max_per_class, best first), moved by the class's regressor, then NMS
        per class; returned best first, scores those probabilities, svm_scores the raw scores.
        Uncalibrated in `mode`, scores stay raw and the threshold reads them as sigmoid(score):
        0.5 keeps those above 0, the SVM's margin. Within a class, boxes are ranked by the raw
        scores: float32 probabilities tie where the sigmoid saturates."""
        params = self.calibration.get(mode)
        z = scores if params is None else logits(scores, params.to(scores.device))
        deltas = None
        if regress and self.reg_weight is not None:

            def deltas(c, rows):
                return pool5[rows] * self.pool5_scale @ self.reg_weight[c] + self.reg_bias[c]

        keep = z > threshold_logit(threshold)
        rows, labels, b = select_per_class(boxes, scores, keep, width, height, nms, max_per_class, deltas)
        raw = scores[rows, labels]
        shown = raw if params is None else torch.sigmoid(z[rows, labels])
        order = torch.argsort(shown, descending=True, stable=True)  # classes' scales differ: best first as shown
        return Detections(b[order].cpu(), shown[order].cpu(), labels[order].cpu(), svm_scores=raw[order].cpu())


def save_detector(det: Detector | FastRCNNDetector, out: Path, checkpoint: dict) -> None:
    """Write the directory; detector.json goes last, so a crash leaves no loadable half."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "detector.json").unlink(missing_ok=True)
    save_checkpoint(out / "backbone.pt", {**checkpoint, "model": det.model.state_dict()})
    heads, fields = _fast_rcnn_parts(det) if isinstance(det, FastRCNNDetector) else _rcnn_parts(det)
    atomic_write_bytes(out / "heads.pt", lambda f: torch.save(heads, f))
    meta = {
        "format": FORMAT,
        "classes": det.classes,
        **fields,
        "preprocess": det.preprocess.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "files": {name: file_sha256(out / name) for name in ("backbone.pt", "heads.pt")},
        **det.info,
    }
    atomic_write_text(out / "detector.json", json.dumps(meta, indent=2))


def _rcnn_parts(det: Detector) -> tuple[dict, dict]:
    """(heads.pt's tensors, detector.json's fields) of an R-CNN detector."""
    heads = {"svm_weight": det.svm_weight.cpu(), "svm_bias": det.svm_bias.cpu()}
    if det.reg_weight is not None:
        heads.update(reg_weight=det.reg_weight.cpu(), reg_bias=det.reg_bias.cpu())
    heads.update({f"platt_{mode}": p.cpu() for mode, p in det.calibration.items()})
    fields = {
        "layer": det.layer,
        "feature_scale": det.feature_scale,
        "pool5_scale": det.pool5_scale,
        "framing": asdict(det.framing),
    }
    return heads, fields


def _fast_rcnn_parts(det: FastRCNNDetector) -> tuple[dict, dict]:
    return {"box_weight": det.box_weight.cpu(), "box_bias": det.box_bias.cpu()}, {"method": FAST_RCNN}


def default_detector() -> Path:
    """The newest detector under runs/detector/ (train-detector's default) or runs/*/detector/ (a demo's)."""
    found = sorted(
        [*Path("runs/detector").glob("*/detector.json"), *Path("runs").glob("*/detector/detector.json")],
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise CheckpointError("no detector: pass --detector DIR (train one with `alexsuite train-detector`)")
    return found[-1].parent


def load_detector(path, device="cpu") -> Detector | FastRCNNDetector:
    d = Path(path)
    meta_file = d / "detector.json"
    if not meta_file.is_file():
        hint = (
            " (training did not finish: run the same train-detector command again to resume)"
            if (d / "cache").is_dir() or (d / "backbone.pt").exists()
            else ""
        )
        raise CheckpointError(f"{d}: not a detector directory, no detector.json{hint}")
    meta = _read_meta(meta_file)
    for name in ("backbone.pt", "heads.pt"):
        if not (d / name).is_file() or file_sha256(d / name) != meta["files"].get(name):
            raise CheckpointError(f"{d / name}: missing or changed since the detector was written; train it again")
    # what it was trained with, read as strictly as it was written
    config = from_dict(DetectorConfig, meta["config"], f"{meta_file}: config") if "config" in meta else None
    loaded = load_model(d / "backbone.pt", device)
    pre, framing = _preprocess(meta["preprocess"], meta_file), _framing(meta, meta_file)
    if pre != loaded.preprocess:
        raise CheckpointError(f"{meta_file}: its preprocessing is not backbone.pt's; train the detector again")
    if meta.get("method") == FAST_RCNN:
        return _fast_rcnn_detector(d / "heads.pt", meta, loaded, config, device)
    widths = feature_dims(loaded.model, meta["layer"], framing)
    heads = _read_heads(d / "heads.pt", device, len(meta["classes"]), widths)
    return Detector(
        loaded.model.eval(),
        pre,
        list(meta["classes"]),
        meta["layer"],
        float(meta["feature_scale"]),
        float(meta["pool5_scale"]),
        heads["svm_weight"],
        heads["svm_bias"],
        heads.get("reg_weight"),
        heads.get("reg_bias"),
        info={k: v for k, v in meta.items() if k not in ("files", "framing")},
        framing=framing,
        config=config,
        calibration={m: heads[f"platt_{m}"] for m in MODES if f"platt_{m}" in heads},
    )


def _fast_rcnn_detector(path: Path, meta: dict, loaded, config, device) -> FastRCNNDetector:
    """A Fast R-CNN detector: its network must end in K + 1 classes and heads.pt hold the box
    layer for them."""
    k = len(meta["classes"])
    heads = _load_heads(path, device)
    fc = loaded.model.classifier[-1].in_features
    shapes = {"box_weight": (4 * (k + 1), fc), "box_bias": (4 * (k + 1),)}
    ok = isinstance(heads, dict) and all(
        isinstance(heads.get(n), torch.Tensor) and heads[n].shape == shape and heads[n].is_floating_point()
        for n, shape in shapes.items()
    )
    if not ok or loaded.model.num_classes != k + 1:
        raise CheckpointError(f"{path}: no box layer for the detector's {k} classes; train the detector again")
    return FastRCNNDetector(
        loaded.model.eval(),
        loaded.preprocess,
        list(meta["classes"]),
        heads["box_weight"],
        heads["box_bias"],
        config.fast_rcnn if config is not None else FastRCNNSettings(),
        info={key: v for key, v in meta.items() if key != "files"},
        config=config,
    )


def _load_heads(path: Path, device):
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types for foreign, pickled or truncated files
        why = "holding objects safe loading refuses" if "Weights only" in str(e) else type(e).__name__
        raise CheckpointError(f"{path}: not a detector's heads file ({why}); train the detector again") from None


_META_TYPES = {
    "classes": list,
    "layer": str,
    "feature_scale": (int, float),
    "pool5_scale": (int, float),
    "preprocess": dict,
    "files": dict,
}


def _read_meta(meta_file: Path) -> dict:
    """detector.json, with every field the loader reads present and of the right type."""
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{meta_file}: unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file}: not an {FORMAT} file")
    fast = meta.get("method") == FAST_RCNN  # no SVM features: no layer or feature scales
    types = {k: kind for k, kind in _META_TYPES.items() if not fast or k in ("classes", "preprocess", "files")}
    wrong = [k for k, kind in types.items() if not isinstance(meta.get(k), kind)]
    if "layer" in types and "layer" not in wrong and meta["layer"] not in LAYERS:
        wrong.append("layer")
    if wrong or not all(isinstance(c, str) for c in meta["classes"]):
        raise CheckpointError(
            f"{meta_file}: missing or malformed {', '.join(wrong) or 'classes'}; train the detector again"
        )
    return meta


def _preprocess(saved: dict, meta_file: Path) -> Preprocess:
    try:
        return Preprocess.from_dict(saved)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{meta_file}: malformed preprocess ({type(e).__name__}: {e}); train it again") from None


def _read_heads(path: Path, device, classes: int, widths: tuple[int, int]) -> dict:
    """heads.pt, loaded weights-only and checked against the detector's classes and feature
    `widths` (SVM features, pool5): a file that is not what save_detector wrote (even with its
    sha256 updated in detector.json) is refused in one line."""
    heads = _load_heads(path, device)
    svm_ok = isinstance(heads, dict) and all(isinstance(heads.get(k), torch.Tensor) for k in ("svm_weight", "svm_bias"))
    if not svm_ok or heads["svm_weight"].shape != (classes, widths[0]) or heads["svm_bias"].shape != (classes,):
        raise CheckpointError(f"{path}: no SVM weights for the detector's {classes} classes; train the detector again")
    regression = {"reg_weight": (classes, widths[1], 4), "reg_bias": (classes, 4)}
    for key, shape in regression.items():
        if key in heads and not (isinstance(heads[key], torch.Tensor) and heads[key].shape == shape):
            raise CheckpointError(f"{path}: its box regressors do not fit the detector; train the detector again")
    if not all(v.is_floating_point() for v in heads.values() if isinstance(v, torch.Tensor)):
        raise CheckpointError(f"{path}: its weights are not floating-point numbers; train the detector again")
    _check_calibration(path, heads, classes)
    return heads


def _check_calibration(path: Path, heads: dict, classes: int) -> None:
    """Platt parameters, where present (detectors written before calibration have none): one
    (a, b) per class and test mode, a > 0 so that they keep the SVM's ranking."""
    for key, value in heads.items():
        if not key.startswith("platt_"):
            continue
        ok = key[len("platt_") :] in MODES and isinstance(value, torch.Tensor) and value.shape == (classes, 2)
        if not ok or not (value.is_floating_point() and bool(torch.isfinite(value).all() and (value[:, 0] > 0).all())):
            raise CheckpointError(f"{path}: its score calibration ({key}) does not fit the detector; train it again")


def _framing(meta: dict, meta_file: Path) -> Framing:
    """Detectors written before framing was a setting warped, with the paper's 16 px."""
    try:
        return Framing(**meta.get("framing", {})).check()
    except (TypeError, ConfigError) as e:
        raise CheckpointError(f"{meta_file}: bad framing ({e})") from None

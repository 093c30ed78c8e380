"""Running a detector over image files: proposals for all of them first (in parallel
processes, cached if asked), then the network, one image at a time. Unreadable images come
back as errors, in order, and never stop the others."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ..boxes import NMS_IOU, Detections, clip
from ..data.inputs import ImageInput
from ..errors import ImageDecodeError
from ..proposals import WORKERS, ProposalSettings, propose
from ..settings import finite, require, setting
from .detector import MAX_PER_CLASS, Detector
from .regions import MODES, image_tensor
from .svd import with_svd

MAX_SIDE = 2000  # longer side the network reads an image at; bounds memory on huge photos


@dataclass
class ImageDetections:
    """One image's detections; `error` instead when it could not be read."""

    image: str
    width: int = 0
    height: int = 0
    detections: Detections | None = None  # with bounding-box regression when the detector has it
    classes: list[str] = field(default_factory=list, repr=False)  # the detector's, which labels index
    unregressed: Detections | None = None  # only when asked for (evaluation compares the two)
    proposals: torch.Tensor | None = field(default=None, repr=False)
    seconds: float = 0.0  # the network's time on this image
    failure: ImageDecodeError | None = field(default=None, repr=False)  # why it could not be read
    source: ImageInput | None = field(default=None, repr=False, compare=False)

    @property
    def error(self) -> str | None:
        return None if self.failure is None else str(self.failure)

    def to_dict(self) -> dict:
        """Exactly what `alexsuite detect --json` prints for this image: boxes in 0-based pixel
        corners, "score" the probability that the box is right (a raw SVM score from a detector
        trained before calibration) and "svm_score" the raw SVM score."""
        d = self.detections
        out = {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "detections": [] if d is None else _detection_dicts(d, self.classes),
        }
        if self.failure is not None:
            out["error"] = self.error
        return out

    def save(self, path) -> None:
        """The image with its labelled boxes drawn, as a PNG (what `detect --out` writes)."""
        from .. import viz

        viz.draw_detections(self.source.rgb(), self.detections, self.classes, path)

    def plot(self):
        """The picture save() writes, as a PIL image (for notebooks)."""
        from .. import viz

        return viz.to_pil(self.save)


def _detection_dicts(d: Detections, classes: list[str]) -> list[dict]:
    raw = d.svm_scores.tolist() if d.svm_scores is not None else [None] * len(d.scores)
    out = []
    for b, s, r, c in zip(d.boxes.tolist(), d.scores.tolist(), raw, d.labels.tolist()):
        one = {"label": classes[int(c)], "score": round(s, 4)}
        if r is not None:
            one["svm_score"] = round(r, 4)
        out.append({**one, "box": [round(v, 1) for v in b]})
    return out


def proposal_settings(det: Detector) -> ProposalSettings:
    """The selective-search settings the detector was trained with."""
    return det.config.proposals if det.config is not None else ProposalSettings()


@dataclass(frozen=True)
class DetectSettings:
    """How `detect` and `eval-detector` run a detector over images."""

    mode: str = setting(
        "rcnn",
        "rcnn: warp every proposal through the network (the paper). fast: one conv pass "
        "per image scale and RoI pooling on conv5, same SVMs. A fast-rcnn detector has one way "
        "and ignores this.",
        "R-CNN §2.2",
    )
    threshold: float = setting(
        0.5,
        "Keep boxes whose calibrated probability of being right (IoU >= 0.5 with an object of its "
        "class) is above this; 0 keeps all. A detector trained before calibration reads it as "
        "sigmoid(SVM score): 0.5 keeps scores above 0.",
        "Platt 1999",
    )
    nms: float = setting(NMS_IOU, "NMS overlap per class.", "rcnn_test.m")
    regress: bool = setting(True, "Move each box by its class's box regressor.", "R-CNN appendix C")
    max_per_class: int = setting(MAX_PER_CLASS, "Boxes per class and image kept before NMS.", "rcnn_test.m")
    mirror: bool = setting(
        False,
        "Also read each proposal mirrored and score the mean of the two feature "
        "vectors (AlexNet's test-time reflections; not R-CNN's): up to twice the network time.",
        "AlexNet §4.1",
    )
    svd: str = setting(
        "",
        "Truncated SVD of fc6 and fc7 while detecting: auto keeps the paper's 1024 and 256 of "
        "4096 singular values, scaled to the net's width (alexnet-small: 256,64); or give R6,R7. "
        "A rank that would not save work keeps its layer whole (alexnet-small's fc6 above 368). "
        "Off unless given.",
        "Fast R-CNN §3.1",
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(WORKERS, "Processes computing proposals.")

    def check(self) -> DetectSettings:
        require(self.mode in MODES, f"--mode {self.mode!r}: choose one of {', '.join(MODES)}")
        require(
            not math.isnan(self.threshold) and self.threshold <= 1,
            f"--threshold is a probability: give a number up to 1 (0 keeps all), got {self.threshold}",
        )
        require(finite(self.nms, 0, 1), f"--nms must be a number from 0 to 1, got {self.nms}")
        require(
            self.svd in ("", "auto") or re.fullmatch(r"[0-9]+,[0-9]+", self.svd) is not None,
            f"--svd {self.svd!r}: give auto or the fc6 and fc7 ranks as R6,R7 (the paper: 1024,256)",
        )
        return self


def run_detector(
    det: Detector,
    images,
    opts: DetectSettings = DetectSettings(),
    settings: ProposalSettings | None = None,
    cache_dir=None,
    on_proposals=None,
    unregressed: bool = False,
):
    """Yield an ImageDetections per image (paths or ImageInputs), in order; `settings`: the
    proposals' (default: the detector's own)."""
    opts.check()
    det = with_svd(det, opts.svd)
    inputs = [i if isinstance(i, ImageInput) else ImageInput(str(i), path=Path(i)) for i in images]
    boxes = propose(
        inputs, settings or proposal_settings(det), cache_dir=cache_dir, workers=opts.workers, on_image=on_proposals
    )
    for item, props in zip(inputs, boxes):
        if isinstance(props, ImageDecodeError):
            yield ImageDetections(item.name, failure=props, source=item)
            continue
        try:
            rgb = item.rgb()
        except ImageDecodeError as e:  # changed or removed since its proposals were made
            yield ImageDetections(item.name, failure=e, source=item)
            continue
        yield _detect_one(det, item, rgb, props, opts, unregressed)


def _detect_one(det: Detector, item: ImageInput, rgb, props, opts: DetectSettings, unregressed: bool):
    start = time.perf_counter()
    h, w = rgb.shape[:2]
    rgb, scale = _bounded(rgb)
    image = image_tensor(rgb)
    sh, sw = image.shape[-2:]
    scored = det.score(image, torch.from_numpy(props) * scale, opts.mode, opts.mirror)

    def select(regress: bool) -> Detections:
        found = det.select(*scored, sw, sh, opts.threshold, opts.nms, regress, opts.max_per_class, opts.mode)
        return _rescale(found, scale, w, h)

    result = ImageDetections(
        item.name, w, h, select(opts.regress), list(det.classes), proposals=torch.from_numpy(props), source=item
    )
    if unregressed:
        result.unregressed = select(False)
    result.seconds = time.perf_counter() - start
    return result


def _bounded(rgb, max_side: int = MAX_SIDE):
    """A huge photo is read at max_side pixels (its proposals were found at 500 anyway)."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0
    import cv2

    scale = max_side / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small, scale


def _rescale(d: Detections, scale: float, width: int, height: int) -> Detections:
    """Boxes back in the original image's pixels (rounding may overshoot its edge by a fraction)."""
    return d if scale == 1.0 else replace(d, boxes=clip(d.boxes / scale, width, height))

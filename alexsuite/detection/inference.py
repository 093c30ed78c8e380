"""Running a detector over image files: proposals for all of them first (in parallel
processes, cached if asked), then the network, one image at a time. Unreadable images come
back as errors, in order, and never stop the others."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..data.decode import decode_image
from ..errors import ImageDecodeError
from ..evaluation.detection import Detections
from ..proposals import ProposalSettings, propose
from .boxes import clip
from .detector import MAX_PER_CLASS, NMS_IOU, Detector
from .regions import image_tensor

MAX_SIDE = 2000   # longer side the network reads an image at; bounds memory on huge photos


@dataclass
class ImageResult:
    path: str
    width: int = 0
    height: int = 0
    detections: Detections | None = None       # with bounding-box regression when the detector has it
    unregressed: Detections | None = None      # only when asked for (evaluation compares the two)
    proposals: torch.Tensor | None = None
    seconds: float = 0.0                       # the network's time on this image
    error: ImageDecodeError | None = None


def proposal_settings(det: Detector) -> ProposalSettings:
    """The selective-search settings the detector was trained with."""
    saved = det.info.get("config", {}).get("proposals")
    return ProposalSettings(**saved) if saved else ProposalSettings()


def run_detector(det: Detector, paths, mode: str = "rcnn", threshold: float = 0.0, nms: float = NMS_IOU,
                 regress: bool = True, settings: ProposalSettings | None = None, cache_dir=None,
                 workers: int = 2, on_proposals=None, unregressed: bool = False,
                 max_per_class: int = MAX_PER_CLASS, mirror: bool = False):
    """Yield an ImageResult per path, in order (mirror: see Detector.score)."""
    paths = [str(p) for p in paths]
    boxes = propose(paths, settings or proposal_settings(det), cache_dir=cache_dir, workers=workers,
                    on_image=on_proposals)
    for path, props in zip(paths, boxes):
        if isinstance(props, ImageDecodeError):
            yield ImageResult(path, error=props)
            continue
        try:
            rgb = decode_image(path)
        except ImageDecodeError as e:   # changed or removed since its proposals were made
            yield ImageResult(path, error=e)
            continue
        start = time.perf_counter()
        h, w = rgb.shape[:2]
        rgb, scale = _bounded(rgb)
        image = image_tensor(rgb)
        sh, sw = image.shape[-2:]
        scored = det.score(image, torch.from_numpy(props) * scale, mode, mirror)
        result = ImageResult(path, w, h, proposals=torch.from_numpy(props))
        result.detections = _rescale(det.select(*scored, sw, sh, threshold, nms, regress, max_per_class), scale, w, h)
        if unregressed:
            result.unregressed = _rescale(det.select(*scored, sw, sh, threshold, nms, False, max_per_class), scale, w, h)
        result.seconds = time.perf_counter() - start
        yield result


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
    return d if scale == 1.0 else Detections(clip(d.boxes / scale, width, height), d.scores, d.labels)

"""A trained Fast R-CNN detector (Fast R-CNN §2.1-2.2; docs/references.md): the fine-tuned
network ending in its (K + 1)-way softmax, and the box layer beside it (heads.pt). It is
written in R-CNN's directory layout (detector.py) with detector.json's "method" naming it, and
answers the same calls, so detect, eval-detector, the API and the server run it unchanged. Its
scores are the softmax's probabilities, so every test mode reads it in its own one mode."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..boxes import MAX_PER_CLASS, NMS_IOU, Detections, select_per_class, valid
from ..boxes import mirror as mirror_boxes
from ..data.transforms import Preprocess
from .fast_rcnn import FastRCNNSettings, score_rois

METHOD = "fast-rcnn"


@dataclass
class FastRCNNDetector:
    model: torch.nn.Module  # eval mode; classifier[-1] is the (K + 1)-way softmax layer
    preprocess: Preprocess
    classes: list[str]  # K object classes (no background)
    box_weight: torch.Tensor  # (4 (K + 1), fc7), outputs boxes.encode deltas
    box_bias: torch.Tensor  # (4 (K + 1),)
    settings: FastRCNNSettings = field(default_factory=FastRCNNSettings)  # its scales
    info: dict = field(default_factory=dict)
    config: object | None = None  # the DetectorConfig it was trained with
    method: str = METHOD

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def calibrated(self, mode: str = "rcnn") -> bool:
        return True  # softmax probabilities in any mode

    @torch.no_grad()
    def score(self, image: torch.Tensor, proposals: torch.Tensor, mode: str = "rcnn", mirror: bool = False):
        """(boxes kept, object-class probabilities (N, K), box deltas (N, K + 1, 4)); mirror:
        the mean of the image's and its reflection's probabilities (AlexNet §4.1)."""
        boxes = proposals.float().to(self.device)
        boxes = boxes[valid(boxes)]
        probs, deltas = self._read(image, boxes)
        if mirror:
            probs = (probs + self._read(image.flip(-1), mirror_boxes(boxes, image.shape[-1]))[0]) / 2
        return boxes, probs[:, 1:], deltas

    def _read(self, image: torch.Tensor, boxes: torch.Tensor):
        return score_rois(self.model, self.box_weight, self.box_bias, image, boxes, self.preprocess, self.settings)

    @torch.no_grad()
    def select(
        self,
        boxes,
        scores,
        deltas,
        width: int,
        height: int,
        threshold: float = 0.5,
        nms: float = NMS_IOU,
        regress: bool = True,
        max_per_class: int = MAX_PER_CLASS,
        mode: str = "rcnn",
    ) -> Detections:
        """Per class, the boxes whose probability is above `threshold` (at most max_per_class,
        best first), moved by the class's own box output, then NMS per class; best first."""
        move = (lambda c, rows: deltas[rows, c + 1]) if regress else None
        rows, labels, b = select_per_class(boxes, scores, scores > threshold, width, height, nms, max_per_class, move)
        s = scores[rows, labels]
        order = torch.argsort(s, descending=True, stable=True)
        return Detections(b[order].cpu(), s[order].cpu(), labels[order].cpu())

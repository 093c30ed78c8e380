"""`alexsuite.Detector`: a trained R-CNN detector run on many images."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..data.inputs import as_inputs
from ..detection.detector import default_detector, load_detector
from ..detection.inference import DetectSettings, ImageDetections, run_detector
from ..devices import resolve_device
from ._common import raise_first, settings_with


class Detector:
    """A detector directory from `alexsuite train-detector` (default: the newest under runs/).

    Scores are probabilities that a box is right (IoU >= 0.5 with an object of its class),
    Platt-scaled from the SVM scores at training time; `threshold` keeps the boxes above one.

    >>> det = Detector("runs/demo/detector")                       # doctest: +SKIP
    >>> det.detect("photo.jpg", mode="fast", threshold=0.3)[0].to_dict()   # doctest: +SKIP
    """

    def __init__(self, path=None, device: str = "auto"):
        self.path = Path(path) if path is not None else default_detector()
        self.det = load_detector(self.path, resolve_device(device))

    @property
    def classes(self) -> list[str]:
        return list(self.det.classes)

    def calibrated(self, mode: str = "rcnn") -> bool:
        """Whether its scores in `mode` are probabilities (else raw SVM scores; see uncalibrated_note)."""
        return self.det.calibrated(mode)

    def uncalibrated_note(self, mode: str = "rcnn") -> str:
        """One line for a detector whose scores in `mode` are raw SVM scores."""
        return (
            f"{self.path}: its {mode} scores are raw SVM scores, not probabilities (trained before calibration, "
            "or without it for this mode); --threshold P keeps SVM scores above log(P / (1 - P)), 0.5: above 0; "
            "train it again for probabilities"
        )

    def __repr__(self) -> str:
        return f"Detector({str(self.path)!r}, classes={self.classes})"

    def detect(
        self, images, settings: DetectSettings | None = None, *, skip_unreadable: bool = False, **overrides
    ) -> list[ImageDetections]:
        """Labelled boxes per image (settings: DetectSettings, e.g. mode="fast", threshold=0.3).
        Proposals for all images are found first (in `workers` processes), then the network
        runs image by image. An unreadable image raises its ImageDecodeError, or with
        skip_unreadable its result carries `.error`."""
        return list(self.detect_iter(images, settings, skip_unreadable=skip_unreadable, **overrides))

    def detect_iter(
        self,
        images,
        settings: DetectSettings | None = None,
        *,
        skip_unreadable: bool = False,
        cache=None,
        on_proposals=None,
        **overrides,
    ) -> Iterator[ImageDetections]:
        """detect(), one image's result at a time as the network finishes it. `cache`: a folder
        keeping proposals by image content; `on_proposals(n)`: progress while they are found."""
        opts = settings_with(DetectSettings, settings, overrides).check()
        for result in run_detector(self.det, as_inputs(images), opts, cache_dir=cache, on_proposals=on_proposals):
            if not skip_unreadable:
                raise_first([result.failure])
            yield result

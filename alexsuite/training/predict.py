"""What class each image is: batched top-k softmax probabilities from the centre crop, or the
mean over the paper's ten crops (AlexNet §4.1; docs/references.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..data import batching, transforms
from ..data.inputs import ImageInput, InputDataset, failed_input
from ..errors import ImageDecodeError
from ..settings import finite, require, setting


@dataclass(frozen=True)
class ClassifySettings:
    """How `alexsuite classify` (and Model.predict) label images."""

    model: str | None = setting(
        None, "Run directory or checkpoint (or torchvision AlexNet weights). Default: the newest runs/train/ run."
    )
    k: int = setting(5, "Labels per image, most probable first.")
    ten_crop: bool = setting(
        False, "Average the softmax of 10 crops (corners, centre and their reflections).", "AlexNet §4.1"
    )
    batch_size: int = setting(128, "Images per forward pass.")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(0, "Image-decoding processes (worth it for thousands of files).")

    def check(self) -> ClassifySettings:
        require(isinstance(self.k, int) and self.k >= 1, f"-k must be 1 or more, got {self.k}")
        require(finite(self.batch_size, 1) and self.batch_size == int(self.batch_size), "--batch-size must be >= 1")
        return self


@dataclass
class Prediction:
    """One image's top-k labels; `error` instead when it could not be read."""

    image: str
    labels: list[str] = field(default_factory=list)
    probs: list[float] = field(default_factory=list)
    failure: ImageDecodeError | None = field(default=None, repr=False)  # why it could not be read
    source: ImageInput | None = field(default=None, repr=False, compare=False)

    @property
    def error(self) -> str | None:
        return None if self.failure is None else str(self.failure)

    def to_dict(self) -> dict:
        """Exactly what `alexsuite classify --json` prints for this image."""
        out = {
            "image": self.image,
            "predictions": [{"label": c, "prob": round(float(p), 6)} for c, p in zip(self.labels, self.probs)],
        }
        if self.error:
            out["error"] = self.error
        return out

    def save(self, path) -> None:
        """The image with its top labels written over it, as a PNG."""
        from .. import viz

        lines = [f"{c} {p:.2f}" for c, p in zip(self.labels, self.probs)]
        viz.captioned(self.source.rgb(), lines, path)

    def plot(self):
        """The picture save() writes, as a PIL image (for notebooks)."""
        from .. import viz

        return viz.to_pil(self.save)


@torch.no_grad()
def predict(model, classes: list[str], inputs: list[ImageInput], pre, device, opts: ClassifySettings, on_batch=None):
    """A Prediction per input, in order; an unreadable input's carries its ImageDecodeError
    (`.failure`, and as text `.error`). `on_batch(n)`: progress."""
    opts.check()
    model.eval()
    out = [Prediction(i.name, source=i) for i in inputs]
    dataset = InputDataset(inputs, pre.base_size)
    plan = batching.epoch_batches(len(dataset), opts.batch_size, 0, 0, shuffle=False, drop_last=False)
    for batch in batching.iterate(dataset, plan, workers=opts.workers):
        for err in batch.failures:
            n = failed_input(err, inputs, (n for n, p in enumerate(out) if p.failure is None and not p.labels))
            if n is not None:
                out[n].failure = err
        if len(batch.labels):
            probs = _probabilities(model, batch.images.to(device), pre, opts.ten_crop)
            top = probs.topk(min(opts.k, len(classes)), dim=1)
            for pos, p, c in zip(batch.labels.tolist(), top.values.tolist(), top.indices.tolist()):
                out[pos].labels, out[pos].probs = [classes[j] for j in c], p
        if on_batch:
            on_batch(len(batch.labels) + len(batch.failures))
    return out


def _probabilities(model, images: torch.Tensor, pre, ten_crop: bool) -> torch.Tensor:
    if ten_crop:  # the mean of the ten crops' softmax, one crop at a time (as evaluate does)
        return (sum(F.softmax(model(crop), 1) for crop in transforms.ten_crops(images, pre)) / 10).float().cpu()
    return F.softmax(model(transforms.center_crop(images, pre)), 1).float().cpu()

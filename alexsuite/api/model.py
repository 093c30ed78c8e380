"""`alexsuite.Model`: a trained AlexNet that labels and embeds images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.inputs import ImageInput, InputDataset, as_inputs
from ..devices import resolve_device
from ..embedding import BATCH_SIZE, DEFAULT_LAYER, embed_batches, input_size, is_whole_image
from ..models.checkpoint import LoadedModel, default_model, load_model
from ..training.predict import ClassifySettings, Prediction, predict
from ._common import raise_first, settings_with


class Model:
    """A run directory, an alexsuite checkpoint or torchvision AlexNet weights, loaded once.

    >>> model = Model("runs/demo/train")                         # doctest: +SKIP
    >>> model.predict("photo.jpg", k=3)[0].labels                # doctest: +SKIP
    """

    def __init__(self, source=None, device: str = "auto"):
        self.device = resolve_device(device)
        self.loaded: LoadedModel = load_model(source if source is not None else default_model(), self.device)

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    @property
    def source(self) -> Path:
        return self.loaded.source

    @property
    def fingerprint(self) -> str:
        return self.loaded.fingerprint

    def __repr__(self) -> str:
        return f"Model({str(self.source)!r}, arch={self.loaded.arch!r}, classes={len(self.classes)})"

    def predict(
        self,
        images,
        settings: ClassifySettings | None = None,
        *,
        skip_unreadable: bool = False,
        progress=None,
        **overrides,
    ) -> list[Prediction]:
        """Top-k labels and probabilities per image (settings: ClassifySettings, e.g. k=5,
        ten_crop=True; its model and device are this Model's own). An unreadable image raises
        its ImageDecodeError, or with skip_unreadable its Prediction carries it (`.failure`, `.error`).
        `progress(n)`: called as batches finish."""
        opts = settings_with(ClassifySettings, settings, overrides)
        found = predict(
            self.loaded.model, self.classes, as_inputs(images), self.loaded.preprocess, self.device, opts, progress
        )
        if not skip_unreadable:
            raise_first(p.failure for p in found)
        return found

    def embed(self, images, layer: str = DEFAULT_LAYER, batch_size: int = BATCH_SIZE, workers: int = 0) -> np.ndarray:
        """float32 (n, d) feature vectors (fc7, fc6, pool5, conv5-gem or conv5-rmac), one row per
        image, in order; an unreadable image raises its ImageDecodeError."""
        inputs: list[ImageInput] = as_inputs(images)
        out = None
        dataset = InputDataset(inputs, input_size(self.loaded.preprocess, layer), is_whole_image(layer))
        for batch in embed_batches(
            self.loaded.model,
            dataset,
            self.loaded.preprocess,
            layer,
            self.device,
            batch_size,
            workers,
            strict=True,
            source=str(self.source),
        ):
            if out is None:
                out = np.empty((len(inputs), batch.vectors.shape[1]), np.float32)
            out[batch.positions.numpy()] = batch.vectors
        return out if out is not None else np.empty((0, 0), np.float32)

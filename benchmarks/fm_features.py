"""fc7 vectors of all 70,000 Fashion-MNIST images from the model benchmarks/train_fashion_mnist.py
trains (runs/bench/fashion-mnist), embedded once and cached for the retrieval benchmarks."""

from pathlib import Path

import numpy as np
import torch

from alexsuite.data.datasets import NAMED
from alexsuite.embedding import embed_labelled
from alexsuite.models.checkpoint import load_model

DEFAULT_MODEL = "runs/bench/fashion-mnist/last.pt"
CACHE = Path("runs/bench/fm_fc7.npz")


def fm_fc7(model: str = DEFAULT_MODEL, layer: str = "fc7") -> dict:
    """{'train': (vectors, labels), 'test': (vectors, labels), 'model': path, 'embed_s': s}."""
    cache = CACHE.with_name(f"fm_{layer}.npz")
    loaded = load_model(model)
    if cache.exists():
        z = np.load(cache)
        if str(z["fingerprint"]) == loaded.fingerprint:
            return {
                "train": (z["train_x"], z["train_y"]),
                "test": (z["test_x"], z["test_y"]),
                "model": model,
                "embed_s": float(z["embed_s"]),
            }
    import time

    t0 = time.perf_counter()
    out = {}
    for split in ("train", "test"):
        data = NAMED["fashion-mnist"](split, loaded.preprocess.base_size)
        x, y, _ = embed_labelled(loaded.model, data, loaded.preprocess, layer, torch.device("cpu"), 256)
        out[split] = (x, y)
    embed_s = time.perf_counter() - t0
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        train_x=out["train"][0],
        train_y=out["train"][1],
        test_x=out["test"][0],
        test_y=out["test"][1],
        fingerprint=loaded.fingerprint,
        embed_s=embed_s,
    )
    return {**out, "model": model, "embed_s": embed_s}

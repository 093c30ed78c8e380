"""How the training step runs fast: channels-last memory and compiled LRN layers (the same
arithmetic, on by default), and bf16 where the CPU has it natively (--amp). docs/benchmarks.md
measures each."""

from __future__ import annotations

import logging
import os
import shutil

import torch

from ..devices import native_bf16
from ..errors import ConfigError
from ..models.alexnet import LocalResponseNorm, lrn


def to_memory_format(model: torch.nn.Module, channels_last: bool) -> torch.nn.Module:
    """Channels-last weights make oneDNN and cuDNN pick their NHWC kernels, and every conv, ReLU,
    LRN and pool after them keeps that layout."""
    return model.to(memory_format=torch.channels_last) if channels_last else model


def batch_format(images: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return images.contiguous(memory_format=torch.channels_last) if channels_last and images.dim() == 4 else images


# Compiling the LRN costs ~10 s in a fresh process and saves ~0.2 ms an image at 28 px
# (benchmarks/train_throughput.py), more in proportion to the pixels: a run of fewer 28 px
# image-steps than this would not earn its compile back.
PAYBACK_IMAGES_28PX = 50_000


def compile_mode(choice: str, device: torch.device, images: int = 0, crop: int = 28) -> tuple[str, str | None]:
    """(what --compile does here, a warning or None). `auto` compiles the LRN for a run of
    `images` training images at `crop` px when that pays back. Inductor needs a C++ compiler
    on a CPU and Triton on a GPU; without one, the LRN runs eagerly and a warning says so."""
    if choice == "auto":
        choice = "lrn" if images * (crop / 28) ** 2 >= PAYBACK_IMAGES_28PX else "off"
    missing = _missing_compiler(device)
    if choice == "off" or not missing:
        return choice, None
    if choice == "model":
        raise ConfigError(f"--compile model needs {missing}, or use --compile off")
    return "off", f"no {missing}: LRN runs uncompiled, slower (--compile off silences this)"


def _missing_compiler(device: torch.device) -> str | None:
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        return None if has_triton() else "Triton (pip install triton)"
    return None if shutil.which(os.environ.get("CXX", "g++")) else "C++ compiler (apt-get install g++)"


_FUSED_LRN = None


def compiled(model: torch.nn.Module, raw: torch.nn.Module, mode: str) -> torch.nn.Module:
    """The training model under `mode` (compile_mode's): `lrn` gives every LRN layer of `raw`
    a compiled kernel (training and validation); `model` compiles it all. A shape not seen before (a short
    batch after unreadable files) compiles once more, past torch's recompile limit eagerly."""
    global _FUSED_LRN
    # inductor imports torch's C++-extension helper, which warns on every CPU-only machine
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if mode == "model":
        return torch.compile(model)
    if mode == "lrn":
        _FUSED_LRN = _FUSED_LRN or torch.compile(lrn, dynamic=False)  # inductor fails on symbolic conv shapes
        # one kernel per layer, batch size, grad mode and precision: a run with a short batch
        # reaches torch's default limit of 8, past which it would quietly go back to eager
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for m in raw.modules():
            if isinstance(m, LocalResponseNorm):
                m.fused = _FUSED_LRN
    return model


def precision(amp: bool, device: torch.device) -> tuple[str, str | None]:
    """(what the run computes in, a warning or None): bf16 is only worth it where it is native."""
    if device.type == "cuda":
        return ("fp16 autocast" if amp else "fp32"), None
    native = native_bf16(device)
    if amp and native is None:
        return "bf16 autocast (emulated)", (
            "this CPU has no native bf16 (AVX512-BF16 or AMX): --amp emulates it and trains slower than fp32; "
            "leave --amp out"
        )
    if amp:
        return f"bf16 autocast ({native})", None
    return ("fp32" + (f"; this CPU has native bf16 ({native}): --amp trains faster" if native else "")), None

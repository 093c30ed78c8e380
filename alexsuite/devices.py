"""Device choice: `auto` takes CUDA when present; no code path assumes it."""

import torch

from .errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).split(":")[0] == "cpu":
        name = "cpu"  # there is one CPU device: cpu:0 is it
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here (cuda:0...)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: alexsuite runs on cpu or cuda")
    return device


def native_bf16(device: torch.device) -> str | None:
    """What runs bf16 natively on `device` (None: emulated, slower than fp32): the CPU
    instructions oneDNN uses (AMX, AVX512-BF16), or the GPU's compute capability."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"CUDA sm_{major}{minor}" if torch.cuda.is_bf16_supported(including_emulation=False) else None
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    if torch.cpu._is_avx512_bf16_supported():
        return "AVX512-BF16"
    return None

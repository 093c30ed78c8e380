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

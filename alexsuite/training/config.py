"""The training configuration: one dataclass, filled from the CLI, saved in the run directory."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

from ..data.datasets import DEFAULT_DATASET
from ..errors import ConfigError

# (base, crop): paper Section 2/4.1 "random 224x224 patches of 256x256 images" (227 is the size
# the 11/4 conv1 actually needs); alexnet-small keeps the same 0.875 crop ratio at 32 -> 28.
INPUT_SIZES = {"alexnet": (256, 227), "alexnet-tv": (256, 224), "alexnet-small": (32, 28)}
# alexnet-small's other inputs (--input-size): a whole number of conv5 cells (stride 4), up to
# 64 px (an epoch costs 1.9x the 28 px one at 40 px); the base keeps 32/28 (40 -> 46, 56 -> 64).
SMALL_INPUT_RANGE = (28, 64)
SCHEDULES = ("plateau", "cosine", "onecycle")


@dataclass
class TrainConfig:
    data: str = DEFAULT_DATASET
    arch: str = "alexnet-small"
    input_size: int | None = None   # alexnet-small only: its input in px (default INPUT_SIZES' 28)
    epochs: int = 10
    batch_size: int = 128           # paper Section 5
    lr: float = 0.01                # paper Section 5
    momentum: float = 0.9           # paper Section 5
    weight_decay: float = 5e-4      # paper Section 5
    schedule: str = "plateau"       # paper: divide lr by 10 when validation error stops improving
    plateau_patience: int = 2
    dropout: float = 0.5            # paper Section 4.2
    activation: str = "relu"        # paper Section 3.1 (tanh only for Figure 1's comparison)
    pca_lighting: bool = True       # paper Section 4.1
    paste_on: str | None = None     # not the paper's: paste each image onto crops of these photos (data/paste.py)
    leave_out: str | None = None    # a JSON list of training images never trained on (datasets.leave_out)
    val_split: float | None = None
    weights: str | None = None      # torchvision AlexNet state dict to start alexnet-tv from
    pretrained: bool = False        # torchvision's IMAGENET1K_V1 via its downloader
    device: str = "auto"
    workers: int = 2
    amp: bool = False
    seed: int = 0
    strict: bool = False
    eval_batch_size: int = 256

    def validate(self) -> None:
        if self.arch not in INPUT_SIZES:
            raise ConfigError(f"unknown --arch {self.arch!r}: choose one of {', '.join(INPUT_SIZES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown --schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1 or self.lr <= 0:
            raise ConfigError("--epochs, --batch-size and --lr must be positive")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.momentum < 0 or self.weight_decay < 0 or self.workers < 0:
            raise ConfigError("--momentum, --weight-decay and --workers cannot be negative")
        if self.input_size is not None:
            low, high = SMALL_INPUT_RANGE
            if self.arch != "alexnet-small":
                raise ConfigError(f"--input-size sets alexnet-small's input; {self.arch} reads "
                                  f"{INPUT_SIZES[self.arch][1]} px: leave --input-size out")
            if not (low <= self.input_size <= high and self.input_size % 4 == 0):
                raise ConfigError(f"--input-size must be a multiple of 4 from {low} to {high} "
                                  f"(whole conv5 cells), got {self.input_size}")
        if (self.weights or self.pretrained) and self.arch != "alexnet-tv":
            raise ConfigError("--weights/--pretrained load torchvision's AlexNet: use --arch alexnet-tv")

    @property
    def base_size(self) -> int:
        """The arch's base-to-crop ratio kept at any crop (exact at the defaults: 32, 256)."""
        base, crop = INPUT_SIZES[self.arch]
        return round(self.crop_size * base / crop)

    @property
    def crop_size(self) -> int:
        return self.input_size or INPUT_SIZES[self.arch][1]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})

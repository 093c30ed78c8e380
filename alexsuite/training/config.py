"""The training configuration: one dataclass, filled from the CLI, saved in the run directory."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from ..data.datasets import DEFAULT_DATASET
from ..errors import ConfigError
from ..models.alexnet import ACTIVATION, DROPOUT
from ..settings import default_of, from_dict, setting
from .evaluate import EvalSettings

# (base, crop): random 224 px patches of 256 px images (AlexNet §2, §4.1; 227 is the size the
# 11/4 conv1 needs, AlexNet §3.5); alexnet-small keeps the same 0.875 crop ratio at 32 -> 28.
INPUT_SIZES = {"alexnet": (256, 227), "alexnet-tv": (256, 224), "alexnet-small": (32, 28)}
# alexnet-small's other inputs (--input-size): a whole number of conv5 cells (stride 4), up to
# 64 px, where an epoch still fits a CPU budget; the base keeps 32/28 (40 -> 46, 56 -> 64).
SMALL_INPUT_RANGE = (28, 64)
SCHEDULES = ("plateau", "cosine", "onecycle")
COMPILE = ("auto", "lrn", "model", "off")


@dataclass
class TrainConfig:
    data: str = setting(
        DEFAULT_DATASET,
        "A dataset name, a folder with train/ and val/ class folders, or one class-folder tree with --val-split.",
    )
    arch: str = setting(
        "alexnet-small",
        "alexnet: the paper's net (227 px); alexnet-tv: torchvision's layout; "
        "alexnet-small: the same topology for 28-64 px images, trains on a CPU.",
        "AlexNet §3.5",
    )
    input_size: int | None = setting(
        None,
        "alexnet-small's input in px: a multiple of 4 from 28 to 64, images "
        "stored at 8/7 of it. Larger objects keep more detail, and a detector's "
        f"windows span more conv5 cells. [default: {INPUT_SIZES['alexnet-small'][1]}]",
    )
    epochs: int = setting(10, "Epochs to train to.")
    batch_size: int = setting(128, "Global batch (split over torchrun processes).", "AlexNet §5")
    lr: float = setting(0.01, "Initial learning rate.", "AlexNet §5")
    momentum: float = setting(0.9, "SGD momentum.", "AlexNet §5")
    weight_decay: float = setting(5e-4, "Weight decay.", "AlexNet §5")
    schedule: str = setting(
        "plateau",
        "plateau: the paper's lr/10 when validation accuracy stops improving; "
        "cosine/onecycle: per-step schedules for short budgets.",
        "AlexNet §5",
    )
    plateau_patience: int = setting(2, "Epochs without improvement before lr/10.")
    val_every: int = setting(
        1,
        "Validate (and update best.pt) every N epochs and always after the last; "
        "the plateau schedule reads every epoch's validation, so it needs 1.",
    )
    dropout: float = setting(DROPOUT, "Dropout on fc6 and fc7.", "AlexNet §4.2")
    activation: str = setting(ACTIVATION, "relu, or tanh for Figure 1's comparison.", "AlexNet §3.1")
    pca_lighting: bool = setting(True, "The paper's PCA colour augmentation.", "AlexNet §4.1")
    paste_on: str | None = setting(
        None,
        "Paste every training image (objects on a black ground, e.g. "
        "Fashion-MNIST) tinted onto a random crop of a photo in this folder: a "
        "backbone for `train-detector` that has seen its classes in clutter.",
        "Copy-paste augmentation",
    )
    leave_out: str | None = setting(
        None,
        "A JSON list of training images never to train on: positions in the "
        "training set (Fashion-MNIST: the idx file's order) or file paths. Keeps a "
        "benchmark's test objects out of pre-training.",
    )
    val_split: float | None = setting(None, "Hold out this fraction of one class-folder tree for validation.")
    weights: str | None = setting(
        None, "Start alexnet-tv from torchvision weights, e.g. alexnet-owt-7be5be79.pth.", "torchvision AlexNet"
    )
    pretrained: bool = setting(
        False, "Start alexnet-tv from torchvision's ImageNet weights (downloads; needs network).", "torchvision AlexNet"
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(2, "Image-decoding processes for image folders.")
    amp: bool = setting(
        False,
        "Mixed precision: fp16 on CUDA, bf16 on CPUs with native bf16 (AVX512-BF16 "
        "or AMX; the run's first line says which): 1.8x at 28 px, 3x for alexnet there.",
        "torch.autocast",
    )
    channels_last: bool = setting(
        True,
        "Keep the net's maps channels-last (NHWC), oneDNN's and cuDNN's fast "
        "convolution layout; the same arithmetic. --no-channels-last: NCHW.",
        "PyTorch channels-last",
    )
    compile: str = setting(
        "auto",
        "What torch.compile (inductor) fuses. lrn: the two LRN layers, whose "
        "elementwise passes are up to a third of the step (seconds to compile, cached); "
        "auto: lrn where that pays back within the run and a compiler is found; model: "
        "the whole net (minutes; slower here); off: eager throughout.",
        "torch.compile",
    )
    seed: int = setting(0, "Random seed of the weights, the batches and the augmentation.")
    strict: bool = setting(False, "Stop at the first unreadable image instead of skipping it.")
    eval_batch_size: int = setting(default_of(EvalSettings, "batch_size"), "Batch size of the per-epoch validation.")

    def validate(self) -> None:
        if self.arch not in INPUT_SIZES:
            raise ConfigError(f"unknown --arch {self.arch!r}: choose one of {', '.join(INPUT_SIZES)}")
        if self.compile not in COMPILE:
            raise ConfigError(f"unknown --compile {self.compile!r}: choose one of {', '.join(COMPILE)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown --schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr must be a finite number above 0, got {self.lr:g} (the paper's is 0.01)")
        for name in ("momentum", "weight_decay", "dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if not -(2**63) <= self.seed < 2**63:
            raise ConfigError(f"--seed must fit in 64 bits, got {self.seed}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be positive")
        if self.val_every < 1:
            raise ConfigError(f"--val-every must be 1 or more, got {self.val_every}")
        if self.val_every > 1 and self.schedule == "plateau":
            raise ConfigError(
                "--schedule plateau lowers the lr on each epoch's validation: use --val-every 1, "
                "or --schedule cosine/onecycle"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.momentum < 0 or self.weight_decay < 0 or self.workers < 0:
            raise ConfigError("--momentum, --weight-decay and --workers cannot be negative")
        if self.input_size is not None:
            low, high = SMALL_INPUT_RANGE
            if self.arch != "alexnet-small":
                raise ConfigError(
                    f"--input-size sets alexnet-small's input; {self.arch} reads "
                    f"{INPUT_SIZES[self.arch][1]} px: leave --input-size out"
                )
            if not (low <= self.input_size <= high and self.input_size % 4 == 0):
                raise ConfigError(
                    f"--input-size must be a multiple of 4 from {low} to {high} "
                    f"(whole conv5 cells), got {self.input_size}"
                )
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
    def from_json(cls, text: str, where: str = "config.json") -> TrainConfig:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: not readable JSON ({e})") from None
        return from_dict(cls, data, where)

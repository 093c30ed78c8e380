"""AlexNet variants behind one factory, each with one layer walk: `features(x, layer)`.

- "alexnet": Krizhevsky, Sutskever & Hinton (2012), AlexNet §3.5 / Figure 2, exactly
  (docs/references.md).
- "alexnet-tv": torchvision's single-tower layout, so its released weights load unchanged.
- "alexnet-small": the same topology sized for 28-64 px inputs, so the suite trains on a CPU.

Feature layers follow R-CNN: pool5 (flattened), fc6 and fc7 after their ReLU, before dropout.
"conv5" is the post-ReLU conv5 map (before pool5) that Fast R-CNN's RoI pooling reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

FEATURE_LAYERS = ("conv5", "pool5", "fc6", "fc7", "logits")
DROPOUT = 0.5  # on fc6 and fc7 (AlexNet §4.2)
ACTIVATION = "relu"  # AlexNet §3.1; "tanh" only for Figure 1's comparison


def lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The LRN formula. Its channel-window sum is one banded 1x1 convolution: torch's own LRN
    sums with avg_pool3d, which dominated alexnet-small's training step (CHANGELOG.md)."""
    c = torch.arange(x.shape[1], device=x.device)
    band = ((c[:, None] - c[None, :]).abs() <= size // 2).to(x.dtype) * (alpha / size)
    window_sum = F.conv2d(x * x, band[:, :, None, None])
    # In fp32 at least, as autocast keeps its norms: bf16 would round k + window_sum (~2.01) to k.
    # Autocast runs pow in fp32 anyway, so under bf16 this costs no extra pass.
    d = window_sum.to(torch.promote_types(x.dtype, torch.float32)) + k
    return (x * d.pow(-beta)).to(x.dtype)


class LocalResponseNorm(nn.Module):
    """Cross-channel LRN, b_c = a_c / (k + alpha/n * sum_{|c'-c|<=n/2} a_c'^2)^beta, the same
    function as torch.nn.LocalResponseNorm (tests pin them together). `fused`, when set (by
    training.speed), is a compiled `lrn` for a training run and its validation: its elementwise
    passes, up to a third of alexnet-small's eager step, fused into one kernel each way."""

    def __init__(self, size: int, alpha: float, beta: float, k: float):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.fused = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.fused or lrn)(x, self.size, self.alpha, self.beta, self.k)


def paper_lrn() -> LocalResponseNorm:
    # AlexNet §3.3: k=2, n=5, alpha=1e-4, beta=0.75 in b = a / (k + alpha * sum a^2)^beta.
    # Like Caffe and PyTorch, the module divides alpha by n, so alpha * n gives the paper's formula.
    return LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0)


def overlapping_pool(ceil_mode: bool = False) -> nn.MaxPool2d:
    # AlexNet §3.4: overlapping pooling, z=3, s=2 (cut top-1 error by 0.4%).
    return nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=ceil_mode)


@dataclass(frozen=True)
class Widths:
    """Channel widths of the five conv layers and the two hidden FC layers."""

    conv: tuple[int, int, int, int, int]
    fc: int


class AlexNet(nn.Module):
    """The conv body (`body`), a pool to a fixed grid, and a classifier whose fc6/fc7
    boundaries are recorded so `features` can stop after any of them."""

    def __init__(
        self,
        body: nn.Sequential,
        pool_grid: int,
        classifier: nn.Sequential,
        fc6_end: int,
        fc7_end: int,
        arch: str,
        feature_stride: int,
    ):
        super().__init__()
        self.body = body  # torchvision calls this `features`; see load_torchvision_state_dict
        self.avgpool = nn.AdaptiveAvgPool2d((pool_grid, pool_grid))
        self.classifier = classifier
        self._fc6_end, self._fc7_end = fc6_end, fc7_end
        self.arch = arch
        self.feature_stride = feature_stride  # input pixels per conv5 cell, for RoI pooling

    @property
    def num_classes(self) -> int:
        return self.classifier[-1].out_features

    @property
    def pool5_dim(self) -> int:
        """Length of one flattened pool5 vector: what fc6 reads."""
        return next(m for m in self.classifier.modules() if isinstance(m, nn.Linear)).in_features  # fc6 may be factored

    def conv5(self, x: torch.Tensor) -> torch.Tensor:
        return self.body[:-1](x)  # the last body module is the pool5 max-pool

    def pool5(self, conv5_map: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.body[-1](conv5_map)), 1)

    def head(self, pool5: torch.Tensor, layer: str = "logits") -> torch.Tensor:
        """Walk the classifier from flattened pool5 features up to `layer`."""
        stop = {"pool5": 0, "fc6": self._fc6_end, "fc7": self._fc7_end, "logits": len(self.classifier)}[layer]
        return self.classifier[:stop](pool5)

    def features(self, x: torch.Tensor, layer: str = "fc7") -> torch.Tensor:
        """Activations at `layer` (one of FEATURE_LAYERS); the only layer walk in alexsuite."""
        if layer not in FEATURE_LAYERS:
            raise ConfigError(f"unknown layer {layer!r}: choose one of {', '.join(FEATURE_LAYERS)}")
        c5 = self.conv5(x)
        if layer == "conv5":
            return c5
        return self.head(self.pool5(c5), layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool5(self.conv5(x)), "logits")


def _paper_body(widths: Widths, first: nn.Conv2d, ceil_mode: bool) -> nn.Sequential:
    c1, c2, c3, c4, c5 = widths.conv
    return nn.Sequential(
        first,
        nn.ReLU(inplace=True),
        paper_lrn(),
        overlapping_pool(ceil_mode),
        # groups=2: the paper's two-GPU split, conv2/4/5 see only their own GPU's half (AlexNet §3.5 / Figure 2).
        nn.Conv2d(c1, c2, 5, padding=2, groups=2),
        nn.ReLU(inplace=True),
        paper_lrn(),
        overlapping_pool(ceil_mode),
        nn.Conv2d(c2, c3, 3, padding=1),
        nn.ReLU(inplace=True),  # conv3 sees both halves
        nn.Conv2d(c3, c4, 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(c4, c5, 3, padding=1, groups=2),
        nn.ReLU(inplace=True),
        overlapping_pool(ceil_mode),
    )


def _paper_classifier(in_features: int, fc: int, num_classes: int, dropout: float) -> nn.Sequential:
    # AlexNet §4.2: dropout 0.5 on the outputs of the first two FC layers.
    return nn.Sequential(
        nn.Linear(in_features, fc),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(fc, fc),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(fc, num_classes),
    )


def _init_paper(model: AlexNet) -> None:
    """AlexNet §5: weights ~ N(0, 0.01); biases 1 in conv2, conv4, conv5 and the hidden
    FC layers (to give ReLUs positive inputs early), 0 in conv1, conv3 and fc8."""
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    for m in convs + linears:
        nn.init.normal_(m.weight, mean=0.0, std=0.01)
        nn.init.zeros_(m.bias)
    for m in (convs[1], convs[3], convs[4], linears[0], linears[1]):
        nn.init.ones_(m.bias)


def _init_small(model: AlexNet) -> None:
    """alexnet-small keeps the paper's *scheme* (positive biases in conv2, conv4, conv5, fc6, fc7)
    but not its scale: at 28-64 px the net is too shallow and narrow for N(0, 0.01) to carry a
    signal through five ReLU layers, so weights use He et al.'s scale, and the biases 0.1 rather
    than 1 (bias 1 on He-scaled weights diverged at lr 0.01; CHANGELOG.md)."""
    _init_paper(model)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias.abs().max() > 0:
                nn.init.constant_(m.bias, 0.1)
    nn.init.normal_(model.classifier[-1].weight, std=0.01)
    nn.init.zeros_(model.classifier[-1].bias)


def build_paper(num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """227x227 input (Figure 2's 224 cannot yield 55x55 with an 11/4 conv; 227 does)."""
    widths = Widths(conv=(96, 256, 384, 384, 256), fc=4096)
    body = _paper_body(widths, nn.Conv2d(3, 96, 11, stride=4), ceil_mode=False)
    model = AlexNet(
        body,
        6,
        _paper_classifier(256 * 6 * 6, 4096, num_classes, dropout),
        fc6_end=2,
        fc7_end=5,
        arch="alexnet",
        feature_stride=16,
    )
    _init_paper(model)
    return model


# Sized to train on a 2-core CPU in minutes (docs/benchmarks.md gives its speed).
SMALL_WIDTHS = Widths(conv=(32, 64, 96, 96, 64), fc=1024)


def build_small(num_classes: int = 10, dropout: float = 0.5, widths: Widths = SMALL_WIDTHS) -> AlexNet:
    """conv1 is 5x5 stride 1 (an 11x11/4 conv would leave nothing of a 28 px image); pools use
    Caffe's ceil rounding so a 28 px input gives 14 -> 7 -> 3 grids, as 227 gives 27 -> 13 -> 6."""
    body = _paper_body(widths, nn.Conv2d(3, widths.conv[0], 5, padding=2), ceil_mode=True)
    grid = 3
    model = AlexNet(
        body,
        grid,
        _paper_classifier(widths.conv[4] * grid * grid, widths.fc, num_classes, dropout),
        fc6_end=2,
        fc7_end=5,
        arch="alexnet-small",
        feature_stride=4,
    )
    _init_small(model)
    return model


def build_torchvision_layout(num_classes: int = 1000, dropout: float = 0.5) -> AlexNet:
    """torchvision's AlexNet ("One weird trick" single tower: 64-192-384-256-256, no LRN,
    no groups) with the same module indices, so `alexnet-owt-7be5be79.pth` loads as it is."""
    body = nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        overlapping_pool(),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        overlapping_pool(),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        overlapping_pool(),
    )
    classifier = nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    )
    return AlexNet(body, 6, classifier, fc6_end=3, fc7_end=6, arch="alexnet-tv", feature_stride=16)


BUILDERS = {
    "alexnet": build_paper,
    "alexnet-tv": build_torchvision_layout,
    "alexnet-small": build_small,
}


def create_model(arch: str, num_classes: int, dropout: float = DROPOUT, activation: str = ACTIVATION) -> AlexNet:
    """The one factory. `activation="tanh"` swaps every ReLU for tanh (Figure 1's comparison)."""
    try:
        builder = BUILDERS[arch]
    except KeyError:
        raise ConfigError(f"unknown architecture {arch!r}: choose one of {', '.join(BUILDERS)}") from None
    model = builder(num_classes=num_classes, dropout=dropout)
    if activation == "tanh":
        for seq in (model.body, model.classifier):
            for i, m in enumerate(seq):
                if isinstance(m, nn.ReLU):
                    seq[i] = nn.Tanh()
    elif activation != "relu":
        raise ConfigError(f"unknown activation {activation!r}: relu or tanh")
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_torchvision_state_dict(model: AlexNet, state: dict) -> None:
    """Load torchvision's AlexNet weights (keys `features.N.*`, `classifier.N.*`)."""
    renamed = {("body." + k[len("features.") :] if k.startswith("features.") else k): v for k, v in state.items()}
    model.load_state_dict(renamed)

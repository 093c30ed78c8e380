"""What a training run is made of, from its TrainConfig: the data (with copy-paste backgrounds),
the preprocessing statistics, the model, the optimiser and its schedule."""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from ..data import transforms
from ..data.datasets import ArrayDataset, leave_out, resolve_classification
from ..data.decode import load_square
from ..data.paste import background_bank, paste, paste_params, photos_fingerprint
from ..distributed import DistContext
from ..errors import CheckpointError, ConfigError, DataError, ImageDecodeError
from ..fileio import file_sha256
from ..models.alexnet import create_model, load_torchvision_state_dict
from ..models.checkpoint import read_checkpoint
from . import speed
from .config import TrainConfig
from .engine import TrainingParts


@dataclass
class TrainingData:
    train: object  # ArrayDataset | FolderDataset
    val: object
    backgrounds: torch.Tensor | None  # --paste-on's bank, on the training device
    fingerprints: dict  # what a resumed run must find unchanged: photos, left-out list

    @property
    def grayscale(self) -> bool:
        """Single-channel images shown as they are (conv1's filters drawn in grey)."""
        return isinstance(self.train, ArrayDataset) and self.train.images.shape[1] == 1 and self.backgrounds is None


def load_data(cfg: TrainConfig, state: dict | None, ctx: DistContext, device) -> TrainingData:
    """The run's training and validation sets; a resumed run refuses a changed --leave-out list
    or --paste-on folder. Checked before the run directory is made: bad input leaves nothing."""
    train_set, val_set = resolve_classification(cfg.data, cfg.base_size, cfg.val_split, cfg.seed)
    fingerprints = {}
    if cfg.leave_out:
        train_set = leave_out(train_set, cfg.leave_out)
        fingerprints["leave_out_sha256"] = file_sha256(cfg.leave_out)
        _check_unchanged(state, "leave_out_sha256", fingerprints, f"--leave-out {cfg.leave_out}: the list")
    if cfg.batch_size % ctx.world:
        raise ConfigError(
            f"--batch-size {cfg.batch_size} is the global batch: make it a multiple of the {ctx.world} processes"
        )
    backgrounds = None
    if cfg.paste_on:
        fingerprints["paste_photos"] = photos_fingerprint(cfg.paste_on)
        _check_unchanged(state, "paste_photos", fingerprints, f"--paste-on {cfg.paste_on}: its photos")
        backgrounds = background_bank(cfg.paste_on, cfg.base_size, seed=cfg.seed).to(device)
    return TrainingData(train_set, val_set, backgrounds, fingerprints)


def _saved_preprocess(state: dict) -> transforms.Preprocess:
    try:
        return transforms.Preprocess.from_dict(json.loads(state["preprocess"]))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot resume: last.pt's preprocessing is damaged ({e}); start a new run") from None


def _check_unchanged(state: dict | None, key: str, now: dict, what: str) -> None:
    if state and state.get(key, now[key]) != now[key]:
        raise ConfigError(f"{what} changed since this run began; put it back to resume, or start a new run")


def build_parts(cfg: TrainConfig, data: TrainingData, state: dict | None, ctx: DistContext, device) -> TrainingParts:
    """Preprocessing, model (DDP-wrapped under torchrun), SGD and its schedule. A resumed run
    takes its preprocessing from last.pt and its weights later, from the same file."""
    pre = _saved_preprocess(state) if state else preprocess_for(cfg, data.train, data.backgrounds)
    classes = len(data.train.classes)
    raw = create_model(cfg.arch, classes, cfg.dropout, cfg.activation) if state else build_model(cfg, classes)
    raw = speed.to_memory_format(raw.to(device), cfg.channels_last)
    model = raw
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None
        )
    steps_per_epoch = max(1, len(data.train) // cfg.batch_size)
    images = cfg.epochs * steps_per_epoch * cfg.batch_size
    compiled, compile_warning = speed.compile_mode(cfg.compile, device, images, cfg.crop_size)
    model = speed.compiled(model, raw, compiled)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    epoch_sched, step_sched = make_schedulers(cfg, optimizer, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if cfg.amp and device.type == "cuda" else None
    return TrainingParts(
        model,
        raw,
        optimizer,
        pre,
        device,
        ctx,
        epoch_sched,
        step_sched,
        scaler,
        data.backgrounds,
        steps_per_epoch,
        compiled,
        compile_warning,
    )


PASTED_SAMPLE = 2048  # images pasted to estimate a --paste-on run's statistics (~2M pixels at 32 px)


def preprocess_for(cfg: TrainConfig, train, backgrounds: torch.Tensor | None = None) -> transforms.Preprocess:
    """Mean/std and RGB PCA of the training images (AlexNet §4.1); ImageNet's for torchvision weights.
    With --paste-on the network sees pasted images, so their statistics are those of a pasted
    sample: the objects-on-black alone would give grey statistics and a PCA lighting that only
    changes brightness."""
    if cfg.weights or cfg.pretrained:
        stats = transforms.IMAGENET
    elif backgrounds is not None:
        stats = transforms.pixel_statistics(_pasted_sample(cfg, train, backgrounds), seed=cfg.seed)
    elif isinstance(train, ArrayDataset):
        stats = transforms.pixel_statistics(train.images, seed=cfg.seed)
    else:  # a few hundred decoded images estimate the statistics of a folder well
        stats = transforms.pixel_statistics(_decoded_sample(train, 64, cfg.seed), seed=cfg.seed)
    return transforms.Preprocess(cfg.base_size, cfg.crop_size, **stats)


def _decoded_sample(train, size: int, seed: int, count: int = 256) -> torch.Tensor:
    """`count` random images of a folder dataset, decoded to size x size (undecodable ones skipped)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=g)[:count].tolist()
    arrays = []
    for i in pick:
        try:
            arrays.append(torch.tensor(load_square(train.paths[i], size)).permute(2, 0, 1))
        except ImageDecodeError:
            continue
    if not arrays:
        raise DataError(f"{train.source}: none of {len(pick)} sampled images could be decoded")
    return torch.stack(arrays)


def _pasted_sample(cfg: TrainConfig, train, backgrounds: torch.Tensor) -> torch.Tensor:
    """Training images pasted onto the run's backgrounds as training pastes them (paste.py)."""
    if isinstance(train, ArrayDataset):
        g = torch.Generator().manual_seed(cfg.seed)
        images = train.images[torch.randperm(len(train), generator=g)[:PASTED_SAMPLE]]
    else:
        images = _decoded_sample(train, cfg.base_size, cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    bank = backgrounds.cpu()
    return paste(images, bank, paste_params(len(images), len(bank), g))


def build_model(cfg: TrainConfig, num_classes: int):
    model = create_model(cfg.arch, num_classes, cfg.dropout, cfg.activation)
    if cfg.weights or cfg.pretrained:
        if cfg.weights:
            state = read_checkpoint(cfg.weights)
            state = state.get("model", state)
        else:
            try:
                from torchvision.models import AlexNet_Weights, alexnet

                state = alexnet(weights=AlexNet_Weights.IMAGENET1K_V1).state_dict()
            except Exception as e:
                raise DataError(
                    f"--pretrained needs torchvision's download, which failed ({str(e).splitlines()[0][:120]}). "
                    "Fix: download alexnet-owt-7be5be79.pth elsewhere and pass --weights FILE"
                ) from None
        head = {k: v for k, v in state.items() if k.startswith("classifier.6.")}
        if head and head["classifier.6.weight"].shape[0] != num_classes:
            # Keep the ImageNet features, start a fresh fc8 for this dataset's classes.
            fresh = model.classifier[6].state_dict()
            state = {**state, "classifier.6.weight": fresh["weight"], "classifier.6.bias": fresh["bias"]}
        try:
            load_torchvision_state_dict(model, state)
        except RuntimeError as e:
            raise CheckpointError(
                f"{cfg.weights or 'pretrained'}: not torchvision AlexNet weights ({str(e).splitlines()[0][:160]})"
            ) from None
    return model


def make_schedulers(cfg: TrainConfig, optimizer, steps_per_epoch: int):
    """(per-epoch scheduler, per-step scheduler): exactly one of them is set."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        # AlexNet §5: lr divided by 10 when the validation error stopped improving.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=cfg.plateau_patience
        ), None
    if cfg.schedule == "cosine":
        return None, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    # cycle_momentum=False: keep the paper's momentum 0.9 rather than OneCycle's 0.85-0.95 cycle.
    return None, torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, cycle_momentum=False)

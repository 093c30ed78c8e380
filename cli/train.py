"""`alexsuite train`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from alexsuite.settings import default_of
from alexsuite.training.config import COMPILE, INPUT_SIZES, SCHEDULES, TrainConfig
from alexsuite.training.run import train as run_training
from alexsuite.training.rundir import saved_config

from .main import main
from .options import option
from .progress import ConsoleReporter


@main.command(context_settings={"show_default": True})
@click.argument("data", required=False, default=default_of(TrainConfig, "data"))
@option(TrainConfig, "arch", type=click.Choice(list(INPUT_SIZES)))
@option(TrainConfig, "input_size", type=int, show_default=False)
@option(
    TrainConfig,
    "epochs",
    type=click.IntRange(min=1),
    default=None,
    show_default=False,
    help=f"Epochs to train to. [default: {default_of(TrainConfig, 'epochs')}, or the resumed run's]",
)
@option(TrainConfig, "batch_size", type=click.IntRange(min=1))
@option(TrainConfig, "lr", type=float)
@option(TrainConfig, "momentum", type=float)
@option(TrainConfig, "weight_decay", type=float)
@option(TrainConfig, "schedule", type=click.Choice(SCHEDULES))
@option(TrainConfig, "plateau_patience", "--patience", type=int)
@option(TrainConfig, "val_every", type=click.IntRange(min=1))
@option(TrainConfig, "dropout", type=float)
@option(TrainConfig, "pca_lighting", "--no-pca-lighting", help="Turn off the paper's PCA colour augmentation.")
@option(TrainConfig, "paste_on", type=click.Path(exists=True, file_okay=False))
@option(TrainConfig, "leave_out", type=click.Path(exists=True, dir_okay=False))
@option(TrainConfig, "val_split", type=float)
@option(TrainConfig, "weights", type=click.Path(dir_okay=False))
@option(TrainConfig, "pretrained")
@option(TrainConfig, "device")
@option(TrainConfig, "workers", type=click.IntRange(min=0))
@option(TrainConfig, "amp")
@option(TrainConfig, "channels_last", "--no-channels-last", help="Keep the net's maps NCHW instead of channels-last.")
@option(TrainConfig, "compile", type=click.Choice(COMPILE))
@option(TrainConfig, "seed", type=int)
@option(TrainConfig, "strict")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory. [default: runs/train/expN]")
@click.option(
    "--resume",
    type=click.Path(exists=True),
    default=None,
    help="Continue an interrupted run from its directory (or last.pt); its own settings are kept.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
def train(data, epochs, out, resume, as_json, quiet, **options):
    """Train an AlexNet on DATA with the paper's recipe (SGD, momentum 0.9, weight decay 5e-4,
    batch 128, lr 0.01 / 10 on plateau, random crops + flips + PCA lighting).

    DATA is a dataset name (fashion-mnist-mini, bundled; fashion-mnist, the full set), a folder
    with train/ and val/ class subfolders, or one class-folder tree with --val-split.

    \b
    Examples:
      alexsuite train --epochs 3                       # bundled Fashion-MNIST subset
      alexsuite train fashion-mnist --epochs 15 --schedule onecycle --lr 0.05
      alexsuite train photos/ --val-split 0.1 --arch alexnet --device cuda
      alexsuite train fashion-mnist --amp              # bf16: ~2x on CPUs with native bf16
      alexsuite train fashion-mnist --schedule onecycle --lr 0.04 --val-every 5
      alexsuite train --resume runs/train/exp          # after an interruption
      torchrun --nproc_per_node 4 -m alexsuite.cli train photos/ --arch alexnet

    Writes a run directory with config.json, last.pt / best.pt, metrics.csv, curves.png and
    conv1_filters.png.
    """
    if epochs is None:
        epochs = saved_config(Path(resume)).epochs if resume else default_of(TrainConfig, "epochs")
    cfg = TrainConfig(data=data, epochs=epochs, **options)
    result = run_training(
        cfg, Path(out) if out else None, Path(resume) if resume else None, ConsoleReporter(quiet=quiet)
    )
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    last = result.history[-1] if result.history else {}
    summary = {
        "run_dir": str(result.run_dir),
        "best_top1": result.best_top1,
        "epochs": len(result.history),
        **{k: last.get(k) for k in ("val_top1", "val_top5")},
    }
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"best validation top-1 {result.best_top1:.4f}; run directory: {result.run_dir}")

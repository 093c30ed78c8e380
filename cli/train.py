"""`alexsuite train`."""
from __future__ import annotations

import json
import os
from pathlib import Path

import click

from alexsuite.data.datasets import DEFAULT_DATASET
from alexsuite.training.config import INPUT_SIZES, SCHEDULES, TrainConfig
from alexsuite.training.run import saved_config
from alexsuite.training.run import train as run_training

from .main import main
from .progress import ConsoleReporter


@main.command(context_settings={"show_default": True})
@click.argument("data", required=False, default=DEFAULT_DATASET)
@click.option("--arch", type=click.Choice(list(INPUT_SIZES)), default="alexnet-small",
              help="alexnet: the paper's net (227 px); alexnet-tv: torchvision's layout; "
                   "alexnet-small: same topology for 28-64 px images, trains on a CPU.")
@click.option("--input-size", type=int, default=None,
              help="alexnet-small's input in px: a multiple of 4 from 28 to 64, images stored at 8/7 of it "
                   "(40 px: 1.9x the time of 28 px). Larger objects keep more detail, and a "
                   "detector's windows span more conv5 cells. [default: 28]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs to train to. [default: 10, or the resumed run's]")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, help="Global batch (split over torchrun processes).")
@click.option("--lr", type=float, default=0.01, help="Initial learning rate.")
@click.option("--momentum", type=float, default=0.9)
@click.option("--weight-decay", type=float, default=5e-4)
@click.option("--schedule", type=click.Choice(SCHEDULES), default="plateau",
              help="plateau: the paper's lr/10 when validation accuracy stops improving; "
                   "cosine/onecycle: per-step schedules for short budgets.")
@click.option("--patience", "plateau_patience", type=int, default=2, help="Epochs without improvement before lr/10.")
@click.option("--dropout", type=float, default=0.5)
@click.option("--no-pca-lighting", is_flag=True, help="Turn off the paper's PCA colour augmentation.")
@click.option("--paste-on", type=click.Path(exists=True, file_okay=False), default=None,
              help="Paste every training image (objects on a black ground, e.g. Fashion-MNIST) tinted onto a "
                   "random crop of a photo in this folder: a backbone for `train-detector` that has seen its "
                   "classes in clutter (copy-paste augmentation; not in the paper).")
@click.option("--leave-out", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A JSON list of training images never to train on: positions in the training set "
                   "(Fashion-MNIST: the idx file's order) or file paths. Keeps a benchmark's test objects "
                   "out of pre-training (benchmarks/scenes_articles.py writes one for scenes-dev val).")
@click.option("--val-split", type=float, default=None, help="Hold out this fraction of one class-folder tree for validation.")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Start alexnet-tv from torchvision weights, e.g. alexnet-owt-7be5be79.pth.")
@click.option("--pretrained", is_flag=True, help="Start alexnet-tv from torchvision's ImageNet weights (downloads; needs network).")
@click.option("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", type=click.IntRange(min=0), default=2, help="Image-decoding processes for image folders.")
@click.option("--amp", is_flag=True, help="Mixed precision (fp16 on CUDA, bf16 on CPU).")
@click.option("--seed", type=int, default=0)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run directory. [default: runs/train/expN]")
@click.option("--resume", type=click.Path(exists=True), default=None,
              help="Continue an interrupted run from its directory (or last.pt); its own settings are kept.")
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
def train(data, epochs, no_pca_lighting, out, resume, as_json, quiet, **options):
    """Train an AlexNet on DATA with the paper's recipe (SGD, momentum 0.9, weight decay 5e-4,
    batch 128, lr 0.01 / 10 on plateau, random crops + flips + PCA lighting).

    DATA is a dataset name (fashion-mnist-mini, bundled; fashion-mnist, the full set), a folder
    with train/ and val/ class subfolders, or one class-folder tree with --val-split.

    \b
    Examples:
      alexsuite train --epochs 3                       # bundled Fashion-MNIST subset
      alexsuite train fashion-mnist --epochs 15 --schedule onecycle --lr 0.05
      alexsuite train photos/ --val-split 0.1 --arch alexnet --device cuda
      alexsuite train --resume runs/train/exp          # after an interruption
      torchrun --nproc_per_node 4 -m alexsuite.cli train photos/ --arch alexnet

    Writes a run directory with config.json, last.pt / best.pt, metrics.csv, curves.png and
    conv1_filters.png.
    """
    if epochs is None:
        epochs = saved_config(Path(resume)).epochs if resume else 10
    cfg = TrainConfig(data=data, epochs=epochs, pca_lighting=not no_pca_lighting, **options)
    result = run_training(cfg, Path(out) if out else None, Path(resume) if resume else None,
                          ConsoleReporter(quiet=quiet))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    last = result.history[-1] if result.history else {}
    summary = {"run_dir": str(result.run_dir), "best_top1": result.best_top1,
               "epochs": len(result.history), **{k: last.get(k) for k in ("val_top1", "val_top5")}}
    if as_json:
        click.echo(json.dumps(summary))
    else:
        click.echo(f"best validation top-1 {result.best_top1:.4f}; run directory: {result.run_dir}")

"""`alexsuite eval`."""
from __future__ import annotations

import json

import click

from alexsuite.data.datasets import DEFAULT_DATASET
from alexsuite.devices import resolve_device
from alexsuite.evaluation.classification import evaluate, evaluation_set
from alexsuite.training.checkpoint import load_model

from .main import main
from .progress import Bar


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("data", required=False, default=DEFAULT_DATASET)
@click.option("--split", default=None, help="Folder data: evaluate DATA/SPLIT (default: DATA/val if present, else DATA).")
@click.option("--ten-crop", is_flag=True, help="Average the 10 crops (corners, centre, and reflections) as the paper did.")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with top1, top5, loss, images.")
def evaluate_cmd(checkpoint, data, split, ten_crop, batch_size, device, workers, strict, as_json):
    """Top-1 / top-5 accuracy of a trained CHECKPOINT (file or run directory) on DATA's
    test split (dataset name) or validation folder.

    \b
    Examples:
      alexsuite eval runs/demo/train/last.pt --ten-crop  # the model `alexsuite demo` trained
      alexsuite eval runs/train/exp                      # bundled test split
      alexsuite eval runs/train/exp/best.pt fashion-mnist --ten-crop --json

    Prints one line (or with --json one object: top1, top5, loss, images); writes nothing.
    """
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev)
    dataset = evaluation_set(loaded, data, split)
    bar = Bar(len(dataset), "eval", enabled=not as_json)
    result = evaluate(loaded.model, dataset, loaded.preprocess, dev, ten_crop=ten_crop,
                      batch_size=batch_size, workers=workers, strict=strict, on_batch=bar)
    bar.close()
    out = {"checkpoint": str(loaded.source), "arch": loaded.arch, "data": dataset.source,
           **{k: v for k, v in result.items() if k != "skipped_examples"}}
    if as_json:
        click.echo(json.dumps(out))
    else:
        if result["skipped"]:
            click.secho(f"warning: skipped {result['skipped']} unreadable image(s), e.g. "
                        f"{result['skipped_examples'][0]}", fg="yellow", err=True)
        crop = "10-crop" if ten_crop else "centre crop"
        click.echo(f"{dataset.source}: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  "
                   f"loss {result['loss']:.4f}  ({result['images']:,} images, {crop})")

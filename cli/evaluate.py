"""`alexsuite eval`."""

from __future__ import annotations

import json

import click

from alexsuite.devices import resolve_device
from alexsuite.models.checkpoint import load_model
from alexsuite.settings import default_of
from alexsuite.training.evaluate import EvalSettings, evaluate, evaluation_set

from .main import main
from .options import option
from .progress import Bar


@main.command(name="eval")
@click.argument("checkpoint", type=click.Path())
@click.argument("data", required=False, default=default_of(EvalSettings, "data"))
@option(EvalSettings, "split")
@option(EvalSettings, "ten_crop")
@option(EvalSettings, "batch_size", type=click.IntRange(min=1))
@option(EvalSettings, "device")
@option(EvalSettings, "workers", type=click.IntRange(min=0))
@option(EvalSettings, "strict")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with top1, top5, loss, images.")
def evaluate_cmd(checkpoint, as_json, **settings):
    """Top-1 / top-5 accuracy of a trained CHECKPOINT (file or run directory) on DATA's
    test split (dataset name) or validation folder.

    \b
    Examples:
      alexsuite eval runs/demo/train/last.pt --ten-crop  # the model `alexsuite demo` trained
      alexsuite eval runs/train/exp                      # bundled test split
      alexsuite eval runs/train/exp/best.pt fashion-mnist --ten-crop --json

    Prints one line (or with --json one object: top1, top5, loss, images); writes nothing.
    """
    opts = EvalSettings(**settings)
    dev = resolve_device(opts.device)
    loaded = load_model(checkpoint, dev)
    dataset = evaluation_set(loaded, opts.data, opts.split)
    bar = Bar(len(dataset), "eval", enabled=not as_json)
    result = evaluate(
        loaded.model,
        dataset,
        loaded.preprocess,
        dev,
        ten_crop=opts.ten_crop,
        batch_size=opts.batch_size,
        workers=opts.workers,
        strict=opts.strict,
        on_batch=bar,
    )
    bar.close()
    out = {
        "checkpoint": str(loaded.source),
        "arch": loaded.arch,
        "data": dataset.source,
        **{k: v for k, v in result.items() if k != "skipped_examples"},
    }
    if as_json:
        click.echo(json.dumps(out))
    else:
        if result["skipped"]:
            click.secho(
                f"warning: skipped {result['skipped']} unreadable image(s), e.g. {result['skipped_examples'][0]}",
                fg="yellow",
                err=True,
            )
        crop = "10-crop" if opts.ten_crop else "centre crop"
        click.echo(
            f"{dataset.source}: top-1 {result['top1']:.4f}  top-5 {result['top5']:.4f}  "
            f"loss {result['loss']:.4f}  ({result['images']:,} images, {crop})"
        )

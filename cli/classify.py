"""`alexsuite classify`."""

from __future__ import annotations

import json

import click

from alexsuite.api import Model
from alexsuite.data.inputs import expand_paths
from alexsuite.fileio import display_path
from alexsuite.training.predict import ClassifySettings

from .main import main
from .options import option
from .outputs import warn
from .progress import Bar


@main.command(name="classify")
@click.argument("images", nargs=-1, required=True)
@option(ClassifySettings, "model")
@option(ClassifySettings, "k", "-k", type=click.IntRange(min=1))
@option(ClassifySettings, "ten_crop")
@option(ClassifySettings, "batch_size", type=click.IntRange(min=1))
@option(ClassifySettings, "device")
@option(ClassifySettings, "workers", type=click.IntRange(min=0))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='JSON Lines: {"image", "predictions": [{"label", "prob"}]} per image, most probable first.',
)
def classify_cmd(images, as_json, **settings):
    """What class each of IMAGES is: the top K labels with their softmax probabilities.
    IMAGES are files, folders (searched recursively) or quoted globs.

    \b
    Examples:
      alexsuite classify runs/demo/images/test/bag --model runs/demo/train -k 3
      alexsuite classify photo.jpg                       # newest run under runs/train/
      alexsuite classify 'photos/**/*.jpg' --ten-crop --json > labels.jsonl

    Prints a line per image (or JSON Lines); unreadable images are skipped, counted and named
    on stderr. Writes nothing.
    """
    opts = ClassifySettings(**settings)
    paths = expand_paths(images, missing_ok=True, warn=warn)
    model = Model(opts.model, opts.device)
    bar = Bar(len(paths), "classify", enabled=not as_json and len(paths) > 1)
    found = model.predict(paths, opts, skip_unreadable=True, progress=bar)
    bar.close()
    failed = [p for p in found if p.error]
    for p in failed:
        click.secho(f"warning: skipped {p.error}", fg="yellow", err=True)
    for p in found:
        if p.error:
            continue
        if as_json:
            click.echo(json.dumps(p.to_dict()))
        else:
            top = "  ".join(f"{c} {prob:.3f}" for c, prob in zip(p.labels, p.probs))
            click.echo(f"{display_path(p.image)}: {top}")
    if failed:
        click.secho(f"{len(found) - len(failed)} classified, {len(failed)} skipped", fg="yellow", err=True)
    if failed and len(failed) == len(found):
        raise SystemExit(2)

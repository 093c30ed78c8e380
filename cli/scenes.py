"""`alexsuite scenes`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alexsuite.data.detection_sets import read_detection_set
from alexsuite.data.scenes import SceneSetSettings, make_scene_set
from alexsuite.demo import DemoConfig
from alexsuite.settings import default_of

from .main import main
from .options import option

_LR = default_of(DemoConfig, "finetune_lr")  # the fine-tuning rate that suits a backbone trained here
_HELP = f"""Write a small Pascal VOC detection set into OUT, made from the bundled data only:
articles of the bundled Fashion-MNIST subset pasted, tinted, onto crops of six bundled
photographs (split train) and of two others (split test, with test-split articles).
Ground truth is the tight box around each article. The same seed writes the same files.

\b
Examples:
  alexsuite scenes runs/scenes                 # 120 training and 30 test scenes
  alexsuite scenes runs/small --train 20 --test 5 --seed 1
  alexsuite train-detector runs/scenes --backbone runs/demo/train --lr {_LR:g}

Writes OUT/JPEGImages, OUT/Annotations and OUT/ImageSets/Main/{{train,test}}.txt; prints
what it wrote (or one JSON object).
"""


@main.command(name="scenes", help=_HELP)
@click.argument("out", type=click.Path(file_okay=False))
@option(SceneSetSettings, "train", type=click.IntRange(min=1))
@option(SceneSetSettings, "test", type=click.IntRange(min=1))
@option(SceneSetSettings, "seed", type=int)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print one JSON object: {"out", "splits": {split: {"images", "objects"}}, "classes"}.',
)
def scenes_cmd(out, as_json, **settings):
    if Path(out).exists() and not Path(out).is_dir():
        raise click.BadParameter(f"{out} is a file; give a folder", param_hint="OUT")
    opts = SceneSetSettings(**settings)
    make_scene_set(Path(out), opts)
    splits = {split: read_detection_set(out, split) for split in ("train", "test")}
    summary = {
        "out": str(out),
        "classes": sorted({c for s in splits.values() for c in s.classes}),
        "splits": {
            name: {"images": len(s), "objects": sum(len(a.labels) for a in s.items)} for name, s in splits.items()
        },
    }
    if as_json:
        click.echo(json.dumps(summary))
        return
    for name, row in summary["splits"].items():
        click.echo(f"{out}: {name} {row['images']} images, {row['objects']} objects")
    click.echo(f"next: alexsuite train-detector {out} --backbone RUN_DIR --lr {_LR:g}", err=True)

"""`alexsuite demo`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alexsuite.demo import DemoConfig, run_demo
from alexsuite.detection.regions import MODES

from .main import main
from .options import option
from .progress import ConsoleReporter


@main.command(name="demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="runs/demo",
    show_default=True,
    help="Where everything is written.",
)
@option(DemoConfig, "epochs", type=click.IntRange(min=1))
@option(DemoConfig, "train_scenes", type=click.IntRange(min=2))
@option(DemoConfig, "test_scenes", type=click.IntRange(min=1))
@option(DemoConfig, "finetune_iters", type=click.IntRange(min=0))
@option(DemoConfig, "detect_mode", type=click.Choice(MODES))
@option(DemoConfig, "device")
@option(DemoConfig, "workers", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print the metrics and stage times as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="Only the stage lines, no progress bars or epoch lines.")
def demo_cmd(out, as_json, quiet, **settings):
    """Run the whole suite on built-in data, offline, in 6-10 minutes on a 2-core CPU,
    and write a report to look at.

    \b
    1. train alexnet-small on the bundled Fashion-MNIST subset (8 epochs)
    2. score it: 10-crop top-1 / top-5 on the test split
    3. index the training images (fc7, FAISS + SQLite) and 4. search with test images
    5. retrieval quality: mAP and precision@10 of test images against training images
    6. paste articles onto bundled photographs: a small Pascal VOC detection set
    7. train an R-CNN detector on it and 8. detect on photos it never saw
    9. report.html with curves, conv1 filters, search sheets and boxes drawn

    \b
    Examples:
      alexsuite demo                      # -> runs/demo/report.html
      alexsuite demo --out /tmp/try --json
      alexsuite demo --device cuda

    Writes OUT/report.html and OUT/demo.json (metrics and seconds per stage), beside
    train/ (a training run), index/ (an index: `alexsuite search IMG --index OUT/index`),
    scenes/ (Pascal VOC), detector/ (`alexsuite detect IMG --detector OUT/detector`)
    and the pictures. Running it again over the same OUT reuses what is done.
    """
    cfg = DemoConfig(**settings)
    reporter = _StageReporter(quiet=quiet or as_json, stage_lines=not as_json)
    result = run_demo(cfg, Path(out), reporter)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"report: {Path(out) / 'report.html'}")
    serve = f"alexsuite serve --index {Path(out) / 'index'} --detector {Path(out) / 'detector'}"
    click.echo(f"search and detect in a browser: {serve}   # then open http://127.0.0.1:8000/")


class _StageReporter(ConsoleReporter):
    """Stage lines always (unless --json); progress bars and epoch lines unless --quiet."""

    def __init__(self, quiet: bool, stage_lines: bool):
        super().__init__(quiet=quiet)
        self.stage_lines = stage_lines

    def stage(self, message: str) -> None:
        if self.stage_lines:
            click.echo(message, err=True)

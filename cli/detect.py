"""`alexsuite detect`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from alexsuite.detection.detector import load_detector
from alexsuite.detection.inference import DetectSettings, run_detector
from alexsuite.detection.regions import MODES
from alexsuite.devices import resolve_device
from alexsuite.errors import CheckpointError
from alexsuite.fileio import display_path, output_names

from .main import main
from .options import option
from .outputs import output_folder
from .progress import Bar


def default_detector() -> Path:
    """The newest detector under runs/detector/ (train-detector's default) or runs/*/detector/ (a demo's)."""
    found = sorted(
        [*Path("runs/detector").glob("*/detector.json"), *Path("runs").glob("*/detector/detector.json")],
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise CheckpointError("no detector: pass --detector DIR (train one with `alexsuite train-detector`)")
    return found[-1].parent


def detections_json(result, classes) -> dict:
    d = result.detections
    return {
        "image": result.path,
        "width": result.width,
        "height": result.height,
        "detections": [
            {"label": classes[int(c)], "score": round(float(s), 4), "box": [round(float(v), 1) for v in b]}
            for b, s, c in zip(d.boxes, d.scores, d.labels)
        ],
    }


@main.command(name="detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--detector",
    type=click.Path(file_okay=False),
    default=None,
    help="Detector directory from train-detector. [default: the newest under runs/detector/]",
)
@option(DetectSettings, "mode", type=click.Choice(MODES))
@option(DetectSettings, "threshold", type=float)
@option(DetectSettings, "nms", type=click.FloatRange(0, 1))
@option(DetectSettings, "mirror")
@option(
    DetectSettings, "regress", "--no-regression", help="Keep the proposals' own boxes (no bounding-box regression)."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Draw each image with its labelled boxes into OUT/<name>.png.",
)
@click.option(
    "--cache", type=click.Path(file_okay=False), default=None, help="Cache proposals here (by image content)."
)
@option(DetectSettings, "device")
@option(DetectSettings, "workers", type=click.IntRange(min=0))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='JSON Lines: {"image", "width", "height", "detections": [{"label", "score", "box": [x1, y1, x2, y2]}]} '
    "per image, boxes in 0-based pixel corners.",
)
def detect_cmd(images, detector, out, cache, as_json, **settings):
    """Detect objects in each IMAGE with an R-CNN detector: selective-search proposals, fc7
    features, per-class SVM scores, box regression, NMS.

    \b
    Examples:
      alexsuite detect runs/demo/scenes/JPEGImages/test_0004.jpg --threshold -0.5 --out runs/boxes
      alexsuite detect photo.jpg                                 # table of boxes
      alexsuite detect photos/*.jpg --mode fast --out runs/boxes # pictures with boxes drawn
      alexsuite detect photo.jpg --threshold -0.5 --json         # more boxes, JSON Lines

    Prints a table per image (or JSON Lines); with --out, writes OUT/<image name>.png (images
    of the same name from different folders get their folder in it too: a__x.png, b__x.png).
    """
    opts = DetectSettings(**settings)
    det = load_detector(detector or default_detector(), resolve_device(opts.device))
    bar = Bar(len(images), "proposals", enabled=not as_json)
    network = Bar(len(images), f"detect ({opts.mode})", enabled=not as_json and len(images) > 1)
    start = time.perf_counter()
    failed = 0
    pictures = output_names(images) if out else {}
    if out:
        output_folder(out, "--out")
    for r in run_detector(det, images, opts, cache_dir=cache, on_proposals=bar):
        network(1)
        if r.error is not None:
            failed += 1
            click.secho(f"warning: skipped {r.error}", fg="yellow", err=True)
            continue
        record = detections_json(r, det.classes)
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{display_path(r.path)}: {len(record['detections'])} objects ({r.width}x{r.height})")
            for d in record["detections"]:
                x1, y1, x2, y2 = d["box"]
                click.echo(f"  {d['label']:<14} {d['score']:>7.3f}   [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
        if out:
            from alexsuite import viz
            from alexsuite.data.decode import decode_image

            viz.draw_detections(decode_image(r.path), r.detections, det.classes, Path(out) / pictures[r.path])
    bar.close()
    network.close()
    done = len(images) - failed
    if not as_json and done:
        click.echo(f"{done} image(s) in {time.perf_counter() - start:.1f}s ({opts.mode} mode)", err=True)
    if out:
        click.echo(f"pictures: {out}", err=True)
    if failed == len(images):
        raise SystemExit(2)

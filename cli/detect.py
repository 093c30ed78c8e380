"""`alexsuite detect`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from alexsuite.api import Detector
from alexsuite.data.inputs import expand_paths
from alexsuite.detection.inference import DetectSettings
from alexsuite.detection.regions import MODES
from alexsuite.evaluation.coco import coco_detections
from alexsuite.fileio import display_path, output_names

from .main import main
from .options import option
from .outputs import output_folder, warn
from .progress import Bar


@main.command(name="detect")
@click.argument("images", nargs=-1, required=True)
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
@option(DetectSettings, "svd", metavar="auto|R6,R7")
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
    help='JSON Lines: {"image", "width", "height", "detections": [{"label", "score", "svm_score", "box": '
    "[x1, y1, x2, y2]}]} per image: score the probability that the box is right, svm_score the raw SVM "
    "score, boxes in 0-based pixel corners.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "coco"]),
    default=None,
    help="jsonl: as --json. coco: one COCO results list [{image_id, category_id, bbox: [x, y, w, h], score}] "
    "at the end, ids from --coco's file, else 1-based positions with file_name and category added.",
)
@click.option(
    "--coco",
    "coco_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="COCO annotation JSON the images come from: --format coco takes its image and category ids.",
)
def detect_cmd(images, detector, out, cache, as_json, fmt, coco_file, **settings):
    """Detect objects in each of IMAGES (files, folders searched recursively, or quoted globs)
    with an R-CNN detector: selective-search proposals, fc7 features, per-class SVM scores
    calibrated into the probability that the box is right, box regression, NMS. A Fast R-CNN
    detector (train-detector --method fast-rcnn) scores the proposals with its own softmax.

    \b
    Examples:
      alexsuite detect runs/demo/scenes/JPEGImages/test_0004.jpg --threshold 0.3 --out runs/boxes
      alexsuite detect photo.jpg                                 # boxes more likely right than not
      alexsuite detect photos/*.jpg --mode fast --out runs/boxes # pictures with boxes drawn
      alexsuite detect photo.jpg --threshold 0.1 --json          # more boxes, JSON Lines
      alexsuite detect photos/ --svd auto                        # fc6/fc7 factored: faster
      alexsuite detect coco/images --format coco --coco coco/annotations.json > results.json

    Prints a table per image (or JSON Lines); with --out, writes OUT/<image name>.png (images
    of the same name from different folders get their folder in it too: a__x.png, b__x.png).
    """
    opts = DetectSettings(**settings).check()
    if coco_file and fmt != "coco":
        raise click.UsageError("--coco gives ids to --format coco; add --format coco")
    coco = fmt == "coco"
    as_json = as_json or fmt is not None
    records = []
    images = expand_paths(images, missing_ok=True, warn=warn)
    detector = Detector(detector, opts.device)
    if not detector.calibrated(opts.mode):
        warn(detector.uncalibrated_note(opts.mode))
    bar = Bar(len(images), "proposals", enabled=not as_json)
    network = Bar(len(images), f"detect ({opts.mode})", enabled=not as_json and len(images) > 1)
    start = time.perf_counter()
    failed = 0
    pictures = output_names(images) if out else {}
    if out:
        output_folder(out, "--out")
    for r in detector.detect_iter(images, opts, skip_unreadable=True, cache=cache, on_proposals=bar):
        network(1)
        if r.error is not None:
            failed += 1
            click.secho(f"warning: skipped {r.error}", fg="yellow", err=True)
            continue
        record = r.to_dict()
        if coco:
            records.append(record)
        elif as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{display_path(r.image)}: {len(record['detections'])} objects ({r.width}x{r.height})")
            for d in record["detections"]:
                x1, y1, x2, y2 = d["box"]
                click.echo(f"  {d['label']:<14} {d['score']:>7.3f}   [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
        if out:
            r.save(Path(out) / pictures[str(r.source.path)])
    bar.close()
    network.close()
    if coco:
        click.echo(json.dumps(coco_detections(records, detector.classes, coco_file)))
    done = len(images) - failed
    if not as_json and done:
        click.echo(f"{done} image(s) in {time.perf_counter() - start:.1f}s ({opts.mode} mode)", err=True)
    if out:
        click.echo(f"pictures: {out}", err=True)
    if failed == len(images):
        raise SystemExit(2)

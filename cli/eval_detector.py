"""`alexsuite eval-detector`."""

from __future__ import annotations

import json

import click

from alexsuite.data.detection_sets import read_detection_set
from alexsuite.detection.detector import load_detector
from alexsuite.detection.evaluate import EvalDetectorSettings, evaluate_detector
from alexsuite.detection.inference import DetectSettings
from alexsuite.detection.regions import MODES
from alexsuite.devices import resolve_device

from .detect import default_detector
from .main import main
from .options import option
from .progress import Bar


@main.command(name="eval-detector")
@click.argument("data", type=click.Path(exists=True))
@click.option(
    "--detector",
    type=click.Path(file_okay=False),
    default=None,
    help="Detector directory. [default: the newest under runs/detector/]",
)
@option(EvalDetectorSettings, "split")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None, help="COCO: the image folder.")
@option(DetectSettings, "mode", type=click.Choice(MODES))
@option(DetectSettings, "mirror")
@click.option(
    "--cache", type=click.Path(file_okay=False), default=None, help="Cache proposals here (by image content)."
)
@option(DetectSettings, "device")
@option(DetectSettings, "workers", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
def eval_detector_cmd(data, detector, split, images, cache, as_json, **settings):
    """Average precision of a detector on DATA (Pascal VOC --split, or COCO .json): per class
    and mean, at IoU 0.5, by the area under the precision-recall curve (VOC2010 on) and by
    VOC2007's 11 points, with and without box regression; proposal recall; seconds per image.

    \b
    Examples:
      alexsuite eval-detector runs/demo/scenes --split test --detector runs/demo/detector
      alexsuite eval-detector data/scenes --split val --detector runs/detector/scenes
      alexsuite eval-detector data/scenes --mode fast --json

    Prints a per-class table (or one JSON object); writes nothing unless --cache.
    """
    opts = DetectSettings(**settings)
    det = load_detector(detector or default_detector(), resolve_device(opts.device))
    dataset = read_detection_set(data, split, images)
    bar = Bar(len(dataset), "proposals", enabled=not as_json)
    bar2 = Bar(len(dataset), "detect", enabled=not as_json)
    result = evaluate_detector(det, dataset, opts, cache_dir=cache, on_proposals=bar, on_image=bar2)
    bar.close()
    bar2.close()
    if as_json:
        click.echo(json.dumps({"data": dataset.source, **result}))
        return
    for e in result["failed"][:5]:
        click.secho(f"warning: skipped {e}", fg="yellow", err=True)
    if result["unknown_classes"]:
        unknown = ", ".join(f"{c} ({n})" for c, n in sorted(result["unknown_classes"].items()))
        click.secho(
            f"warning: objects of classes the detector does not know were not scored: {unknown}", fg="yellow", err=True
        )
    click.echo(
        f"{dataset.source}: {result['images']} images, {opts.mode} mode{', mirrored too' if opts.mirror else ''}"
    )
    click.echo(f"{'class':<14} {'AP':>6} {'AP07':>6} {'AP no-bbox':>10} {'objects':>8}")
    for name, row in result["per_class"].items():
        plain = result["per_class_no_regression"][name]["ap"]
        click.echo(f"{name:<14} {row['ap']:>6.3f} {row['ap_voc07']:>6.3f} {plain:>10.3f} {row['positives']:>8}")
    click.echo(f"{'mAP':<14} {result['map']:>6.3f} {result['map_voc07']:>6.3f} {result['map_no_regression']:>10.3f}")
    rec = result["proposal_recall"]
    t = result["seconds_per_image"]
    click.echo(
        f"proposal recall@0.5 {rec['recall']:.3f} ({rec['boxes_per_image']:.0f} boxes/image); "
        f"seconds per image: proposals {t['proposals']:.2f}, network {t['network']:.2f}, total {t['total']:.2f}"
    )

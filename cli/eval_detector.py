"""`alexsuite eval-detector`."""

from __future__ import annotations

import json

import click

from alexsuite.data.detection_sets import read_detection_set
from alexsuite.detection.detector import default_detector, load_detector
from alexsuite.detection.evaluate import EvalDetectorSettings, evaluate_detector
from alexsuite.detection.inference import DetectSettings
from alexsuite.detection.regions import MODES
from alexsuite.devices import resolve_device

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
@option(DetectSettings, "svd", metavar="auto|R6,R7")
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
    On COCO data also COCO's AP@[.50:.95], AP50, AP75, by object size, and AR@100, by
    pycocotools (`pip install 'alexsuite[coco]'`) on the same images.

    \b
    Examples:
      alexsuite eval-detector runs/demo/scenes --split test --detector runs/demo/detector
      alexsuite eval-detector data/scenes --split val --detector runs/detector/scenes
      alexsuite eval-detector data/scenes --mode fast --json
      alexsuite eval-detector data/scenes --split val --svd auto   # what truncated SVD costs

    Prints a per-class table (or one JSON object); writes nothing unless --cache.
    """
    opts = DetectSettings(**settings).check()
    det = load_detector(detector or default_detector(), resolve_device(opts.device))
    dataset = read_detection_set(data, split, images)
    bar = Bar(len(dataset), "proposals", enabled=not as_json)
    bar2 = Bar(len(dataset), "detect", enabled=not as_json)
    result = evaluate_detector(det, dataset, opts, cache_dir=cache, on_proposals=bar, on_image=bar2)
    bar.close()
    bar2.close()
    for w in result.get("warnings", []):  # on stderr, so --json's stdout stays one JSON object
        click.secho(f"warning: {w}", fg="yellow", err=True)
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
        f"{dataset.source}: {result['images']} images, {result['mode']} mode"
        f"{', mirrored too' if opts.mirror else ''}{f', fc6/fc7 through SVD {opts.svd}' if opts.svd else ''}"
    )
    coco = result.get("coco")
    per_category = coco["per_category"] if coco else {}
    extra = f" {'COCO AP':>8}" if coco else ""
    click.echo(f"{'class':<14} {'AP':>6} {'AP07':>6} {'AP no-bbox':>10} {'objects':>8}{extra}")
    for name, row in result["per_class"].items():
        plain = result["per_class_no_regression"][name]["ap"]
        extra = f" {_coco_number(per_category.get(name, -1)):>8}" if coco else ""
        click.echo(f"{name:<14} {row['ap']:>6.3f} {row['ap_voc07']:>6.3f} {plain:>10.3f} {row['positives']:>8}{extra}")
    extra = f" {coco['AP']:>17.3f}" if coco else ""
    click.echo(
        f"{'mAP':<14} {result['map']:>6.3f} {result['map_voc07']:>6.3f} {result['map_no_regression']:>10.3f}{extra}"
    )
    if coco:
        click.echo(_coco_line(coco))
    rec = result["proposal_recall"]
    t = result["seconds_per_image"]
    click.echo(
        f"proposal recall@0.5 {rec['recall']:.3f} ({rec['boxes_per_image']:.0f} boxes/image); "
        f"seconds per image: proposals {t['proposals']:.2f}, network {t['network']:.2f}, total {t['total']:.2f}"
    )


def _coco_number(v: float) -> str:
    return "n/a" if v < 0 else f"{v:.3f}"  # COCO's -1: no objects to measure


def _coco_line(coco: dict) -> str:
    """COCO's summary, by pycocotools (COCO detection evaluation; docs/references.md)."""
    n = _coco_number
    return (
        f"COCO (pycocotools, {coco['images']} images): AP@[.50:.95] {n(coco['AP'])}, AP50 {n(coco['AP50'])}, "
        f"AP75 {n(coco['AP75'])}; AP small {n(coco['APs'])}, medium {n(coco['APm'])}, large {n(coco['APl'])}; "
        f"AR@100 {n(coco['AR100'])}"
    )

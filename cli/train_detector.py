"""`alexsuite train-detector`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alexsuite.detection.calibration import CalibrationSettings
from alexsuite.detection.config import METHODS, DetectorConfig
from alexsuite.detection.fast_rcnn import FastRCNNSettings
from alexsuite.detection.finetune import FinetuneSettings
from alexsuite.detection.framing import FRAMING_CHOICES, Framing, parse_padding
from alexsuite.detection.svm import SVMSettings
from alexsuite.detection.training import train_detector
from alexsuite.embedding import LAYERS
from alexsuite.errors import ConfigError
from alexsuite.proposals import MODES as PROPOSAL_MODES
from alexsuite.proposals import ProposalSettings

from .main import main
from .options import option
from .progress import ConsoleReporter


def default_out(data: str) -> Path:
    """runs/detector/<name of DATA>: the same command run again resumes in the same place."""
    p = Path(data).expanduser().resolve()
    return Path("runs/detector") / (p.stem if p.suffix.lower() == ".json" else p.name)


def _padding(ctx, param, value):
    try:
        return parse_padding(value)
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None


def _framing(shape: str, padding) -> Framing:
    try:
        return Framing(shape, padding).check()
    except ConfigError as e:
        raise click.BadParameter(str(e), param_hint="'--context-padding'") from None


def _scales(ctx, param, value):
    if isinstance(value, tuple):
        return value
    try:
        scales = tuple(int(v) for v in str(value).split(","))
    except ValueError:
        scales = ()
    if not scales or min(scales) < 1:
        raise click.BadParameter(f"{value!r}: give pixel sizes such as 600 or 480,576,688,864,1200")
    return scales


@main.command(name="train-detector")
@click.argument("data", type=click.Path(exists=True))
@option(DetectorConfig, "backbone", required=True, type=click.Path(exists=True))
@option(DetectorConfig, "method", type=click.Choice(METHODS))
@option(FastRCNNSettings, "iterations", "--fast-rcnn-iters", "fast_rcnn_iters", type=click.IntRange(min=0))
@option(FastRCNNSettings, "scales", "--scales", type=click.UNPROCESSED, metavar="PX[,PX...]", callback=_scales)
@option(FastRCNNSettings, "max_size", type=click.IntRange(min=1))
@option(DetectorConfig, "split")
@option(DetectorConfig, "images", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Detector directory. [default: runs/detector/<DATA's name>]",
)
@option(DetectorConfig, "layer", type=click.Choice(LAYERS))
@option(Framing, "shape", "--region-shape", "region_shape", type=click.Choice(FRAMING_CHOICES))
@option(Framing, "padding", "--context-padding", "context_padding", type=str, callback=_padding)
@option(FinetuneSettings, "iterations", "--finetune-iters", "finetune_iters", type=click.IntRange(min=0))
@option(FinetuneSettings, "lr", type=float)
@option(FinetuneSettings, "batch_size", type=click.IntRange(min=2))
@option(FinetuneSettings, "recolour")
@option(FinetuneSettings, "fast_fraction", type=click.FloatRange(0, 1))
@option(FinetuneSettings, "image_fraction", type=click.FloatRange(0, 1))
@option(SVMSettings, "C", "--svm-c", "svm_c", type=float)
@option(CalibrationSettings, "folds", "--calibration-folds", "calibration_folds", type=click.IntRange(min=0))
@option(ProposalSettings, "mode", "--proposals", "proposal_mode", type=click.Choice(PROPOSAL_MODES))
@option(ProposalSettings, "max_boxes", type=click.IntRange(min=1))
@option(DetectorConfig, "proposal_cache", type=click.Path(file_okay=False))
@option(DetectorConfig, "train_fast", "--train-fast/--no-train-fast")
@option(DetectorConfig, "device")
@option(DetectorConfig, "workers", type=click.IntRange(min=0))
@option(FinetuneSettings, "seed", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the training metrics as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def train_detector_cmd(
    data,
    backbone,
    method,
    fast_rcnn_iters,
    scales,
    max_size,
    split,
    images,
    out,
    layer,
    region_shape,
    context_padding,
    finetune_iters,
    lr,
    batch_size,
    recolour,
    fast_fraction,
    image_fraction,
    svm_c,
    calibration_folds,
    proposal_mode,
    max_boxes,
    proposal_cache,
    train_fast,
    device,
    workers,
    seed,
    as_json,
    quiet,
):
    """Train an R-CNN detector on DATA (a Pascal VOC directory, or a COCO .json with --images)
    from an AlexNet BACKBONE, with R-CNN's recipe (docs/references.md):

    \b
      1. selective-search proposals (fast mode) for every training image
      2. fine-tune the network on warped proposals (16 px context at 227 px; IoU >= 0.5 is
         an object, the rest background; 32 objects + 96 background per batch; lr 0.001)
      3. fc7 features of every proposal and ground-truth box
      4. one linear SVM per class: ground truth vs. proposals with IoU < 0.3, hard negatives mined
      5. one box regressor per class on pool5 (ridge, lambda 1000, proposals with IoU >= 0.6)
      6. Platt scaling of the SVM scores into probabilities that a box is right, fitted on
         each of 3 folds of the training images scored by SVMs trained on the other two

    --method fast-rcnn trains Fast R-CNN instead: after the proposals, one stage trains the
    network with a softmax and a box-regression head together (2 images x 64 RoIs a batch,
    lr 0.001 or --lr, the paper's 40k iterations scaled to your images; cache/fast_rcnn.pt).

    Each stage is cached under OUT/cache: run the same command again after an interruption
    and it carries on. Writes the detector directory (detector.json, backbone.pt, heads.pt,
    metrics.json), complete only once detector.json is written.

    \b
    Examples:
      alexsuite train-detector data/VOC2007 --backbone runs/train/exp
      alexsuite train-detector data/VOC2007 --backbone runs/train/exp --method fast-rcnn
      alexsuite train-detector annotations.json --images photos/ --backbone alexnet-owt-7be5be79.pth
      alexsuite eval-detector data/VOC2007 --split val --detector runs/detector/VOC2007
    """
    cfg = DetectorConfig(
        data=data,
        backbone=backbone,
        method=method,
        # --lr and --recolour serve either method
        fast_rcnn=FastRCNNSettings(
            iterations=fast_rcnn_iters, scales=scales, max_size=max_size, seed=seed, lr=lr, recolour=recolour
        ),
        split=split,
        images=images,
        layer=layer,
        framing=_framing(region_shape, context_padding),
        finetune=FinetuneSettings(
            iterations=finetune_iters,
            lr=lr,
            batch_size=batch_size,
            seed=seed,
            recolour=recolour,
            fast_fraction=fast_fraction,
            image_fraction=image_fraction,
        ),
        svm=SVMSettings(C=svm_c),
        calibration=CalibrationSettings(folds=calibration_folds),
        proposals=ProposalSettings(mode=proposal_mode, max_boxes=max_boxes),
        proposal_cache=proposal_cache,
        train_fast=train_fast,
        device=device,
        workers=workers,
    )
    out = Path(out) if out else default_out(data)
    reporter = ConsoleReporter(quiet=quiet or as_json)
    reporter.note(f"detector directory: {out}")
    result = train_detector(cfg, out, reporter)
    m = result.metrics
    if as_json:
        click.echo(json.dumps({"detector": str(out), **m}))
        return
    rec = m["proposal_recall"]
    click.echo(
        f"proposals: recall@0.5 {rec['recall']:.3f} over {rec['objects']} objects, "
        f"{rec['boxes_per_image']:.0f} boxes per image"
    )
    if "fast_rcnn" in m:
        fr = m["fast_rcnn"]
        losses = (
            f"log loss {fr['final_cls_loss']:.3f}, box loss {fr['final_box_loss']:.3f}"
            if fr["final_cls_loss"]
            else "done"
        )
        click.echo(f"Fast R-CNN: {fr['iterations']} iterations, {losses}")
        click.echo("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in m["seconds"].items()))
        click.echo(f"detector: {out}")
        return
    ft = m["finetune"]
    loss = (
        f"final loss {ft['final_loss']:.3f}" if ft["final_loss"] is not None else "resumed from its cache, already done"
    )
    click.echo(f"fine-tuning: {ft['iterations']} iterations, {loss}")
    click.echo(
        "SVMs: " + ", ".join(f"{c} {s['positives']}+/{s.get('negatives_kept', 0)}-" for c, s in m["svms"].items())
    )
    click.echo(_calibration_line(m["calibration"]))
    click.echo("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in m["seconds"].items()))
    click.echo(f"detector: {out}")


def _calibration_line(calibration: dict) -> str:
    """Per test mode, the held-out detections the probabilities were fitted on."""
    fitted = {mode: v["pooled"] for mode, v in calibration.items() if mode != "folds"}
    if not fitted:
        return "scores: raw SVM scores (not calibrated)"
    return f"calibration ({calibration['folds']} folds): " + ", ".join(
        f"{mode} {v['detections']} held-out detections, precision {v['precision']:.3f}" for mode, v in fitted.items()
    )

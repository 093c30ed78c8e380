"""`alexsuite train-detector`."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from alexsuite.detection.finetune import FinetuneSettings
from alexsuite.detection.svm import SVMSettings
from alexsuite.detection.training import DetectorConfig, train_detector
from alexsuite.embedding import FRAMING_CHOICES, Framing, parse_padding
from alexsuite.errors import ConfigError
from alexsuite.proposals import ProposalSettings

from .main import main
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


@main.command(name="train-detector")
@click.argument("data", type=click.Path(exists=True))
@click.option("--backbone", required=True, type=click.Path(exists=True),
              help="The network to start from: an `alexsuite train` run directory or checkpoint, "
                   "or torchvision's alexnet-owt-7be5be79.pth.")
@click.option("--split", default="train", show_default=True, help="Pascal VOC: the ImageSets/Main split to train on.")
@click.option("--images", type=click.Path(exists=True, file_okay=False), default=None,
              help="COCO: the image folder (default: the .json file's folder).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Detector directory. [default: runs/detector/<DATA's name>]")
@click.option("--layer", type=click.Choice(["fc7", "fc6", "pool5"]), default="fc7", show_default=True,
              help="Features the SVMs use (R-CNN: fc7).")
@click.option("--region-shape", type=click.Choice(FRAMING_CHOICES), default="warp", show_default=True,
              help="The region read for each box (R-CNN appendix A): warp stretches the box to the square "
                   "input, the paper's choice; square takes the tightest square around it and keeps the "
                   "object's proportions, for a backbone that learnt whole, unstretched objects "
                   "(scenes-dev from the Fashion-MNIST backbone: 0.58 of val's objects right before "
                   "fine-tuning with warp, 0.87 with square and --context-padding 0); warp+square reads "
                   "every box both ways (fine-tuning draws one per window) and gives the SVMs both fc7 "
                   "vectors side by side, for twice the network time.")
@click.option("--context-padding", default="16", show_default=True, callback=_padding,
              help="Pixels of image around the region, at a 227 px input (R-CNN: 16; kept as the same "
                   "fraction at other input sizes); with warp+square one number for both or one each, "
                   "e.g. 16,0.")
@click.option("--finetune-iters", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Fine-tuning iterations of 128 warped windows (0: keep the backbone as it is, the paper's 'no fine-tuning' row).")
@click.option("--lr", type=float, default=0.001, show_default=True, help="Fine-tuning learning rate. R-CNN: 0.001, a tenth of CaffeNet's pre-training rate; a backbone "
                   "pre-trained at a higher rate or far from your images needs more (scenes-dev from the "
                   "Fashion-MNIST backbone: 0.04).")
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True)
@click.option("--recolour", is_flag=True,
              help="Fine-tuning sees each window with its colour channels shuffled and scaled (not in "
                   "R-CNN; for objects that come in any colour).")
@click.option("--fast-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of each fine-tuning batch read as --mode fast reads it (conv5 of the window with "
                   "image around it, RoI-pooled), so the network learns both modes' features.")
@click.option("--image-fraction", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of each fine-tuning batch read exactly as --mode fast reads it, Fast R-CNN's "
                   "training: groups of 16 windows of one image RoI-pooled from its whole conv5 map at "
                   "the pyramid level fast mode reads them at.")
@click.option("--svm-c", type=float, default=1e-3, show_default=True, help="SVM regularisation C (rcnn_train.m: 1e-3).")
@click.option("--proposals", "proposal_mode", type=click.Choice(["fast", "quality"]), default="fast", show_default=True)
@click.option("--max-boxes", type=click.IntRange(min=1), default=2000, show_default=True, help="Proposals per image.")
@click.option("--proposal-cache", type=click.Path(file_okay=False), default=None,
              help="Where proposals are cached by image content. [default: OUT/cache/proposals]")
@click.option("--train-fast/--no-train-fast", default=True, show_default=True,
              help="Also train the SVMs and box regressors on --mode fast features (RoI-pooled from conv5), "
                   "so one set of them serves both test modes.")
@click.option("--device", default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Processes computing proposals.")
@click.option("--seed", type=int, default=0)
@click.option("--json", "as_json", is_flag=True, help="Print the training metrics as one JSON object.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def train_detector_cmd(data, backbone, split, images, out, layer, region_shape, context_padding, finetune_iters, lr, batch_size, recolour,
                       fast_fraction, image_fraction, svm_c,
                       proposal_mode, max_boxes, proposal_cache, train_fast, device, workers, seed, as_json,
                       quiet):
    """Train an R-CNN detector on DATA (a Pascal VOC directory, or a COCO .json with --images)
    from an AlexNet BACKBONE, with Girshick et al.'s recipe:

    \b
      1. selective-search proposals (fast mode) for every training image
      2. fine-tune the network on warped proposals (16 px context at 227 px; IoU >= 0.5 is
         an object, the rest background; 32 objects + 96 background per batch; lr 0.001)
      3. fc7 features of every proposal and ground-truth box
      4. one linear SVM per class: ground truth vs. proposals with IoU < 0.3, hard negatives mined
      5. one box regressor per class on pool5 (ridge, lambda 1000, proposals with IoU >= 0.6)

    Each stage is cached under OUT/cache: run the same command again after an interruption
    and it carries on. Writes the detector directory (detector.json, backbone.pt, heads.pt,
    metrics.json), complete only once detector.json is written.

    \b
    Examples:
      alexsuite train-detector data/VOC2007 --backbone runs/train/exp
      alexsuite train-detector annotations.json --images photos/ --backbone alexnet-owt-7be5be79.pth
      alexsuite eval-detector data/VOC2007 --split val --detector runs/detector/VOC2007
    """
    cfg = DetectorConfig(
        data=data, backbone=backbone, split=split, images=images, layer=layer,
        framing=asdict(_framing(region_shape, context_padding)),
        finetune=asdict(FinetuneSettings(iterations=finetune_iters, lr=lr, batch_size=batch_size, seed=seed,
                                         recolour=recolour, fast_fraction=fast_fraction,
                                         image_fraction=image_fraction)),
        svm=asdict(SVMSettings(C=svm_c)),
        proposals=asdict(ProposalSettings(mode=proposal_mode, max_boxes=max_boxes)),
        proposal_cache=proposal_cache, train_fast=train_fast, device=device, workers=workers)
    out = Path(out) if out else default_out(data)
    reporter = ConsoleReporter(quiet=quiet or as_json)
    reporter.note(f"detector directory: {out}")
    result = train_detector(cfg, out, reporter)
    m = result.metrics
    if as_json:
        click.echo(json.dumps({"detector": str(out), **m}))
        return
    rec = m["proposal_recall"]
    click.echo(f"proposals: recall@0.5 {rec['recall']:.3f} over {rec['objects']} objects, "
               f"{rec['boxes_per_image']:.0f} boxes per image")
    ft = m["finetune"]
    loss = f"final loss {ft['final_loss']:.3f}" if ft["final_loss"] is not None else "resumed from its cache, already done"
    click.echo(f"fine-tuning: {ft['iterations']} iterations, {loss}")
    click.echo("SVMs: " + ", ".join(f"{c} {s['positives']}+/{s.get('negatives_kept', 0)}-"
                                   for c, s in m["svms"].items()))
    click.echo("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in m["seconds"].items()))
    click.echo(f"detector: {out}")

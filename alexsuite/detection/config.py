"""`train-detector`'s settings: one dataclass holding every stage's own (R-CNN §2.3,
appendix C; docs/references.md), saved in detector.json and read back strictly."""

from __future__ import annotations

from dataclasses import dataclass

from ..embedding import DEFAULT_LAYER
from ..proposals import WORKERS, ProposalSettings
from ..settings import setting
from . import bbox_regression, svm
from .calibration import CalibrationSettings
from .fast_rcnn import FastRCNNSettings
from .finetune import FinetuneSettings
from .framing import Framing

METHODS = ("rcnn", "fast-rcnn")


@dataclass
class DetectorConfig:
    data: str = setting(help="Pascal VOC directory, or COCO .json with --images.")
    backbone: str = setting(
        help="The network to start from: an `alexsuite train` run directory or checkpoint, "
        "or torchvision's alexnet-owt-7be5be79.pth."
    )
    method: str = setting(
        "rcnn",
        "rcnn: fine-tune, then SVMs and box regressors on cached features (R-CNN). fast-rcnn: "
        "the network ends in a softmax and box regression trained together, end to end (Fast R-CNN).",
        "Fast R-CNN §2",
    )
    fast_rcnn: FastRCNNSettings = setting(
        factory=FastRCNNSettings, help="Fast R-CNN's training and test scales.", source="Fast R-CNN §2.3"
    )
    split: str = setting("train", "Pascal VOC: the ImageSets/Main split to train on.")
    images: str | None = setting(None, "COCO: the image folder (default: the .json file's folder).")
    layer: str = setting(DEFAULT_LAYER, "Features the SVMs use.", "R-CNN §2.3")
    framing: Framing = setting(factory=Framing, help="The region read per box.", source="R-CNN appendix A")
    finetune: FinetuneSettings = setting(
        factory=FinetuneSettings, help="Fine-tuning on warped proposals.", source="R-CNN §2.3"
    )
    svm: svm.SVMSettings = setting(factory=svm.SVMSettings, help="The per-class SVMs.", source="rcnn_train.m")
    negative_iou: float = setting(
        0.3, "SVM negatives overlap every object of the class less than this.", "rcnn_train.m"
    )
    regression_iou: float = setting(
        bbox_regression.MIN_IOU, "Proposals this close to an object train its box regressor.", "R-CNN appendix C"
    )
    ridge: float = setting(
        bbox_regression.RIDGE_LAMBDA, "Ridge regularisation of the box regressors.", "R-CNN appendix C"
    )
    calibration: CalibrationSettings = setting(
        factory=CalibrationSettings,
        help="Platt scaling of the SVM scores into probabilities that a box is right.",
        source="Platt 1999",
    )
    proposals: ProposalSettings = setting(factory=ProposalSettings, help="Selective search.", source="Selective search")
    proposal_cache: str | None = setting(
        None, "Where proposals are cached by image content. [default: OUT/cache/proposals]"
    )
    train_fast: bool = setting(
        True,
        "Also train the SVMs and box regressors on --mode fast features "
        "(RoI-pooled from conv5), so one set of them serves both test modes.",
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(WORKERS, "Processes computing proposals.")

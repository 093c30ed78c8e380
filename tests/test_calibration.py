"""Platt scaling of the detector's SVM scores: the fit itself, the promise it makes (a score of
p is right about p of the time, on images the detector never saw), the scores and JSON that
carry it, detectors written before it, and AP left as it was."""

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from alexsuite.boxes import Truth
from alexsuite.cli.main import main
from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.calibration import MIN_SLOPE, fit_platt, platt_targets, probabilities
from alexsuite.detection.config import DetectorConfig
from alexsuite.detection.detector import load_detector
from alexsuite.detection.evaluate import evaluate_detector
from alexsuite.detection.finetune import FinetuneSettings
from alexsuite.detection.inference import DetectSettings, run_detector
from alexsuite.detection.training import train_detector
from alexsuite.errors import CheckpointError
from alexsuite.evaluation.detection import match_class
from alexsuite.fileio import file_sha256
from alexsuite.proposals import ProposalSettings

from .conftest import make_voc_scenes


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_fit_platt_recovers_a_known_logistic_model():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 1.5, 20_000)
    hits = rng.random(len(scores)) < 1 / (1 + np.exp(-(2.0 * scores - 0.5)))
    a, b = fit_platt(scores, platt_targets(hits))
    assert a == pytest.approx(2.0, abs=0.1) and b == pytest.approx(-0.5, abs=0.1)
    # separable scores still have a finite fit (Platt's targets), and reversed ones keep a > 0
    a, b = fit_platt(scores, platt_targets(scores > 1))
    assert 0 < a < 100 and np.isfinite(b)
    a, _ = fit_platt(scores, platt_targets(scores < 0))
    assert a == pytest.approx(MIN_SLOPE)
    assert platt_targets(np.array([True, False, False])).tolist() == pytest.approx([2 / 3, 1 / 4, 1 / 4])


def _bins(p: np.ndarray, hits: np.ndarray, edges, least: int) -> list[tuple[int, float, float]]:
    """(count, mean probability, precision) per bin of `edges`; a bin holding fewer than
    `least` detections joins the one below it (the lowest, the one above)."""
    groups = []
    for lo, hi in zip(edges[::-1][1:], edges[::-1]):  # from the top
        inside = (p >= lo) & (p < hi)
        if groups and groups[-1].sum() < least:
            groups[-1] |= inside
        else:
            groups.append(inside)
    if len(groups) > 1 and groups[-1].sum() < least:
        groups[-2] |= groups.pop()
    return [(int(g.sum()), float(p[g].mean()), float(hits[g].mean())) for g in groups[::-1] if g.any()]


def test_a_score_of_p_is_right_about_p_of_the_time_on_new_images(trained_detector, tmp_path):
    """Trained on 48 scenes (from the fixture's fine-tuned network, not fine-tuned again) and
    run over 60 new ones, the detections binned by probability: where a bin holds 50 or more,
    its mean probability is within 0.1 of the share that VOC's matching finds right. Circles and
    stripes, which this small network tells apart: its squares pass for circles, and a class
    whose best boxes are often another's levels off below 1, which a sigmoid cannot follow."""
    classes = ("circle", "stripes")
    make_voc_scenes(tmp_path / "voc", "train", 48, seed=6, classes=classes)
    make_voc_scenes(tmp_path / "voc", "test", 60, seed=5, classes=classes)
    cfg = DetectorConfig(
        data=str(tmp_path / "voc"),
        backbone=str(trained_detector / "backbone.pt"),
        finetune=FinetuneSettings(iterations=0),
        proposals=ProposalSettings(size=256, max_boxes=300),
        train_fast=False,
        workers=2,
    )
    trained = train_detector(cfg, tmp_path / "det")
    fitted = trained.metrics["calibration"]["rcnn"]["classes"]
    assert all(not c["pooled"] and c["a"] > 0 and c["detections"] > 100 for c in fitted.values())
    test = read_voc(tmp_path / "voc", "test")
    found = [
        r.detections
        for r in run_detector(trained.detector, [a.image for a in test.items], DetectSettings(threshold=0, workers=2))
    ]
    index = {c: i for i, c in enumerate(trained.detector.classes)}
    truths = [Truth(a.boxes, torch.tensor([index[lab] for lab in a.labels]), a.difficult) for a in test.items]
    matched = [match_class(found, truths, c)[:2] for c in range(len(classes))]
    p = np.concatenate([s for s, _ in matched])
    hits = np.concatenate([h for _, h in matched])
    bins = _bins(p, hits, [0, 0.1, 0.4, 0.7, 1.0 + 1e-9], least=50)
    checked = [(n, mean, seen) for n, mean, seen in bins if n >= 50]
    assert len(checked) >= 3 and max(mean for _, mean, _ in checked) > 0.7, bins  # the high bins are judged too
    assert all(abs(mean - seen) <= 0.1 for _, mean, seen in checked), bins


def _uncalibrated_copy(detector, out):
    """The detector as train-detector wrote it before calibration: no Platt parameters in
    heads.pt (its sha256 updated), none in the saved settings and metrics."""
    shutil.copytree(detector, out, ignore=shutil.ignore_patterns("cache"))
    heads = torch.load(out / "heads.pt", weights_only=True)
    torch.save({k: v for k, v in heads.items() if not k.startswith("platt_")}, out / "heads.pt")
    meta = json.loads((out / "detector.json").read_text())
    meta["files"]["heads.pt"] = file_sha256(out / "heads.pt")
    meta["config"].pop("calibration")
    meta["metrics"].pop("calibration")
    (out / "detector.json").write_text(json.dumps(meta))
    return out


def test_detect_prints_probabilities_and_the_raw_svm_score(trained_detector, voc_scenes):
    det = load_detector(trained_detector)
    assert det.calibrated("rcnn") and det.calibrated("fast")
    metrics = json.loads((trained_detector / "metrics.json").read_text())
    assert metrics["calibration"]["folds"] == 3 and metrics["seconds"]["calibration"] > 0
    for mode in ("rcnn", "fast"):
        for c in metrics["calibration"][mode]["classes"].values():
            assert c["a"] > 0 and c["detections"] > 0 and 0 <= c["precision"] <= 1
    image = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[0]
    result = run("detect", image, "--detector", trained_detector, "--threshold", 0, "--json", "--workers", 0)
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output
    found = json.loads(result.stdout)["detections"]
    assert found and all(0 <= d["score"] <= 1 and isinstance(d["svm_score"], float) for d in found)
    params = det.calibration["rcnn"]
    for d in found:
        c = det.classes.index(d["label"])
        expected = probabilities(torch.tensor([[d["svm_score"]]]), params[c : c + 1])
        assert d["score"] == pytest.approx(float(expected), abs=1e-3)
    default = run("detect", image, "--detector", trained_detector, "--json", "--workers", 0)
    kept = json.loads(default.stdout)["detections"]
    assert [d for d in found if d["score"] > 0.5 + 1e-4] == [d for d in kept if d["score"] > 0.5 + 1e-4]
    assert all(d["score"] >= 0.5 for d in kept)  # the default keeps what is more likely right than not
    assert run("detect", image, "--detector", trained_detector, "--threshold", 1.5).exit_code == 2


def test_a_detector_from_before_calibration_loads_keeps_raw_scores_and_warns(trained_detector, voc_scenes, tmp_path):
    old = _uncalibrated_copy(trained_detector, tmp_path / "old")
    det = load_detector(old)
    assert not det.calibrated("rcnn") and det.config.calibration.folds == 3  # the setting's default
    image = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[0]
    result = run("detect", image, "--detector", old, "--threshold", 0, "--json", "--workers", 0)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and "raw SVM scores" in warnings[0] and "train it again" in warnings[0]
    found = json.loads(result.stdout)["detections"]
    assert found and all(d["score"] == d["svm_score"] for d in found)
    assert any(d["score"] < 0 for d in found)  # raw scores, as before
    # --threshold P reads raw scores as sigmoid(score): the default 0.5 keeps those above 0, as before
    default = json.loads(run("detect", image, "--detector", old, "--json", "--workers", 0).stdout)["detections"]
    assert default == [d for d in found if d["svm_score"] > 0]


def test_heads_with_calibration_that_does_not_fit_are_refused(trained_detector, tmp_path):
    copy = _uncalibrated_copy(trained_detector, tmp_path / "det")
    for bad in (torch.ones(2, 2), torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.0]])):
        heads = torch.load(copy / "heads.pt", weights_only=True)
        torch.save({**heads, "platt_rcnn": bad}, copy / "heads.pt")
        meta = json.loads((copy / "detector.json").read_text())
        meta["files"]["heads.pt"] = file_sha256(copy / "heads.pt")
        (copy / "detector.json").write_text(json.dumps(meta))
        with pytest.raises(CheckpointError, match="calibration"):
            load_detector(copy)


def test_calibration_leaves_the_ranking_and_so_the_map_unchanged(trained_detector, voc_scenes, tmp_path):
    val = read_voc(voc_scenes, "val")
    new = evaluate_detector(load_detector(trained_detector), val, DetectSettings(workers=0))
    old = evaluate_detector(
        load_detector(_uncalibrated_copy(trained_detector, tmp_path / "old")), val, DetectSettings(workers=0)
    )
    for key in ("map", "map_voc07", "map_no_regression", "per_class"):
        assert new[key] == old[key], key
    assert new["map"] > 0.3

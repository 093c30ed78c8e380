"""`alexsuite proposals`, `train-detector`, `detect` and `eval-detector` through the CLI."""

import contextlib
import io
import json

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from alexsuite.cli.main import main
from alexsuite.detection.detector import load_detector
from alexsuite.detection.svd import fc_width


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_proposals_command_json_and_pictures(tmp_path):
    img = tmp_path / "scene.png"
    Image.new("RGB", (160, 120), (100, 100, 100)).save(img)
    with Image.open(img) as im:
        im.paste((220, 30, 30), (40, 30, 100, 90))
        im.save(img)
    result = run("proposals", img, "--json", "--out", tmp_path / "pics", "--workers", "0")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.splitlines()[0])
    assert line["image"] == str(img) and len(line["boxes"]) >= 1 and len(line["boxes"][0]) == 4
    with Image.open(tmp_path / "pics" / "scene.png") as drawn:
        assert drawn.size == (160, 120)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    result = run("proposals", bad, "--workers", "0")
    assert result.exit_code == 2 and "bad.jpg" in result.output


def test_detect_prints_json_lines_draws_pictures_and_skips_bad_files(trained_detector, voc_scenes, tmp_path):
    images = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[:2]
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    result = run(
        "detect",
        *images,
        bad,
        "--detector",
        trained_detector,
        "--threshold",
        "-1",
        "--json",
        "--out",
        tmp_path / "drawn",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in images]
    for line in lines:
        assert (line["width"], line["height"]) == (128, 104) and line["detections"]
        for d in line["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert d["label"] in ("circle", "square", "stripes") and isinstance(d["score"], float)
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 104
    assert "notes.jpg" in result.stderr
    assert sorted(p.name for p in (tmp_path / "drawn").iterdir()) == sorted(f"{p.stem}.png" for p in images)
    table = run(
        "detect", images[0], "--detector", trained_detector, "--mode", "fast", "--threshold", "-1", "--workers", "0"
    )
    assert table.exit_code == 0 and "objects" in table.stdout


def test_eval_detector_reports_both_ap_definitions(trained_detector, voc_scenes):
    result = run(
        "eval-detector",
        voc_scenes,
        "--split",
        "val",
        "--detector",
        trained_detector,
        "--mode",
        "fast",
        "--json",
        "--workers",
        "0",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["mode"] == "fast" and out["images"] == 8 and 0 <= out["map"] <= 1
    assert {"map_voc07", "map_no_regression", "proposal_recall", "seconds_per_image"} <= set(out)
    assert "coco" not in out  # COCO's numbers are for COCO data
    table = run("eval-detector", voc_scenes, "--detector", trained_detector, "--workers", "0", "--mirror")
    assert table.exit_code == 0 and "mAP" in table.stdout and "AP07" in table.stdout
    assert "rcnn mode, mirrored too" in table.stdout


def voc_as_coco(voc_root, split: str, n: int, path):
    """The first n images of a VOC split as a COCO file (ids from 0, no areas, as hand-made files have)."""
    from alexsuite.data.detection_sets import read_voc

    voc = read_voc(voc_root, split)
    cats = {c: i + 1 for i, c in enumerate(voc.classes)}
    coco = {"categories": [{"id": i, "name": c} for c, i in cats.items()], "images": [], "annotations": []}
    for k, a in enumerate(voc.items[:n]):
        coco["images"].append({"id": k, "file_name": a.image.name, "width": a.width, "height": a.height})
        for (x1, y1, x2, y2), label in zip(a.boxes.tolist(), a.labels):
            box = [x1, y1, x2 - x1, y2 - y1]
            coco["annotations"].append(
                {"id": len(coco["annotations"]), "image_id": k, "category_id": cats[label], "bbox": box}
            )
    path.write_text(json.dumps(coco))
    return path


def test_eval_detector_on_coco_data_adds_pycocotools_ap(trained_detector, voc_scenes, tmp_path, monkeypatch):
    import sys

    ann = voc_as_coco(voc_scenes, "val", 4, tmp_path / "val.json")
    args = ["eval-detector", ann, "--images", voc_scenes / "JPEGImages", "--detector", trained_detector]
    args += ["--mode", "fast", "--workers", "0", "--cache", tmp_path / "cache"]
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)  # pycocotools' prints stay out of it
    coco = out["coco"]
    assert out["images"] == coco["images"] == 4 and out["warnings"] == []
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"} <= set(coco)
    assert 0 <= coco["AP"] <= coco["AP50"] <= 1 and set(coco["per_category"]) <= set(out["per_class"])
    print(f"COCO AP {coco['AP']:.3f}, AP50 {coco['AP50']:.3f}; VOC mAP {out['map']:.3f}")
    table = run(*args)
    assert table.exit_code == 0, table.output
    assert "COCO AP" in table.stdout and f"AP@[.50:.95] {coco['AP']:.3f}" in table.stdout

    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # as if it were not installed
    bare = run(*args, "--json")
    assert bare.exit_code == 0, bare.output
    out = json.loads(bare.stdout)
    assert out["coco"] is None and 0 <= out["map"] <= 1
    assert "warning: COCO AP needs pycocotools: pip install 'alexsuite[coco]'" in bare.stderr


def test_train_detector_command_and_its_errors(voc_scenes, trained_run, tmp_path):
    out = tmp_path / "det"
    result = run(
        "train-detector",
        voc_scenes,
        "--backbone",
        trained_run,
        "--out",
        out,
        "--finetune-iters",
        "3",
        "--batch-size",
        "16",
        "--max-boxes",
        "40",
        "--workers",
        "0",
        "--region-shape",
        "warp+square",
        "--context-padding",
        "16,0",
        "--fast-fraction",
        "0.25",
        "--image-fraction",
        "0.25",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["detector"] == str(out) and (out / "detector.json").exists()
    # the backbone was trained from scratch here, and --lr was left at the paper's: one line says what to pass
    advice = [line for line in result.stderr.splitlines() if "trained from scratch" in line]
    assert len(advice) == 1 and "--lr 0.04 --finetune-iters 4000 --recolour --fast-fraction 0.5" in advice[0]
    recorded = json.loads((out / "detector.json").read_text())
    assert recorded["framing"] == {"shape": "warp+square", "padding": [16, 0]}
    assert recorded["config"]["finetune"]["image_fraction"] == 0.25
    det = load_detector(out)
    assert det.svm_weight.shape[1] == 2 * det.model.head(torch.zeros(1, det.model.pool5_dim), "fc7").shape[1]
    found = run("detect", voc_scenes / "JPEGImages" / "val_000.jpg", "--detector", out, "--mode", "fast", "--json")
    assert found.exit_code == 0, found.output
    result = run(
        "train-detector",
        voc_scenes,
        "--backbone",
        trained_run,
        "--region-shape",
        "warp+square",
        "--context-padding",
        "16,0,4",
    )
    assert result.exit_code == 2 and "one per shape" in result.output and "Traceback" not in result.output
    result = run(
        "train-detector", voc_scenes, "--backbone", trained_run, "--fast-fraction", "0.6", "--image-fraction", "0.5"
    )
    assert result.exit_code == 2 and "add up to 1" in result.output and "Traceback" not in result.output
    result = run("train-detector", voc_scenes, "--backbone", trained_run, "--region-shape", "round")
    assert result.exit_code == 2 and "round" in result.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    result = run("train-detector", voc_scenes, "--backbone", junk, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "junk.pt" in result.output and "Traceback" not in result.output
    result = run("detect", voc_scenes / "JPEGImages" / "val_000.jpg", "--detector", tmp_path / "x")
    assert result.exit_code == 2 and "no detector.json" in result.output


def test_a_40_px_backbone_trains_a_detector_with_every_fine_tuning_read_and_detects_in_both_modes(
    voc_scenes, shapes_dir, tmp_path
):
    """train --input-size 40: warps, context crops and whole-image groups are all 40 px reads."""
    backbone, out = tmp_path / "b40", tmp_path / "det40"
    result = run(
        "train",
        shapes_dir,
        "--input-size",
        "40",
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--workers",
        "0",
        "--out",
        backbone,
        "-q",
    )
    assert result.exit_code == 0, result.output
    result = run(
        "train-detector",
        voc_scenes,
        "--backbone",
        backbone,
        "--out",
        out,
        "--finetune-iters",
        "3",
        "--batch-size",
        "16",
        "--max-boxes",
        "40",
        "--workers",
        "0",
        "--region-shape",
        "warp+square",
        "--context-padding",
        "16,0",
        "--fast-fraction",
        "0.25",
        "--image-fraction",
        "0.25",
        "-q",
    )
    assert result.exit_code == 0, result.output
    assert load_detector(out).preprocess.crop_size == 40
    for mode in ("rcnn", "fast"):
        result = run(
            "eval-detector", voc_scenes, "--split", "val", "--detector", out, "--mode", mode, "--json", "--workers", "0"
        )
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["images"] == 8 and 0 <= report["map"] <= 1


def test_train_detector_reads_coco_json(voc_scenes, trained_run, tmp_path):
    from alexsuite.data.detection_sets import read_voc

    voc = read_voc(voc_scenes, "train")
    cats = {c: i + 1 for i, c in enumerate(voc.classes)}
    coco = {"categories": [{"id": i, "name": c} for c, i in cats.items()], "images": [], "annotations": []}
    for n, a in enumerate(voc.items[:6]):
        coco["images"].append({"id": n, "file_name": a.image.name, "width": a.width, "height": a.height})
        for box, label in zip(a.boxes.tolist(), a.labels):
            x1, y1, x2, y2 = box
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]),
                    "image_id": n,
                    "category_id": cats[label],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "iscrowd": 0,
                }
            )
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps(coco))
    result = run(
        "train-detector",
        ann,
        "--images",
        voc_scenes / "JPEGImages",
        "--backbone",
        trained_run,
        "--out",
        tmp_path / "det",
        "--finetune-iters",
        "2",
        "--batch-size",
        "8",
        "--max-boxes",
        "30",
        "--no-train-fast",
        "--workers",
        "0",
        "--json",
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["training_images"] == 6 and out["proposal_recall"]["objects"] == len(coco["annotations"])
    assert json.loads((tmp_path / "det" / "detector.json").read_text())["classes"] == voc.classes


def test_scenes_writes_a_voc_set_from_the_bundled_data_the_same_each_time(tmp_path):
    from alexsuite.data.detection_sets import read_voc
    from alexsuite.fileio import file_sha256

    first = run("scenes", tmp_path / "a", "--train", "3", "--test", "2", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["splits"]["train"]["images"] == 3 and summary["splits"]["test"]["images"] == 2
    test = read_voc(tmp_path / "a", "test")
    assert sum(len(a.labels) for a in test.items) == summary["splits"]["test"]["objects"] >= 2
    assert set(test.classes) <= set(summary["classes"])
    assert run("scenes", tmp_path / "b", "--train", "3", "--test", "2").exit_code == 0
    for name in ("JPEGImages/train_0002.jpg", "Annotations/test_0001.xml"):
        assert file_sha256(tmp_path / "a" / name) == file_sha256(tmp_path / "b" / name)
    (tmp_path / "file").write_text("x")
    refused = run("scenes", tmp_path / "file")
    assert refused.exit_code == 2 and "is a file" in refused.output


def test_detect_writes_coco_results_with_the_sets_ids(trained_detector, voc_scenes, tmp_path):
    from pycocotools.coco import COCO

    ann = voc_as_coco(voc_scenes, "val", 4, tmp_path / "val.json")
    names = [img["file_name"] for img in json.loads(ann.read_text())["images"]]
    images = [voc_scenes / "JPEGImages" / n for n in names]
    args = ["detect", *images, "--detector", trained_detector, "--mode", "fast", "--threshold", -1, "--workers", 0]
    result = run(*args, "--format", "coco", "--coco", ann)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)  # one JSON list, nothing else on stdout
    assert found and {r["image_id"] for r in found} <= {0, 1, 2, 3}
    assert all(set(r) == {"image_id", "category_id", "bbox", "score"} and r["bbox"][2] > 0 for r in found)
    lines = [json.loads(x) for x in run(*args, "--json").stdout.splitlines()]
    first = lines[0]["detections"][0]
    x1, y1, x2, y2 = first["box"]
    assert found[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1]) and found[0]["score"] == first["score"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann))
        assert len(gt.loadRes(found).getAnnIds()) == len(found)  # pycocotools reads it as results
    plain = json.loads(run(*args, "--format", "coco").stdout)
    assert plain[0]["file_name"] == str(images[0]) and plain[0]["image_id"] == 1 and "category" in plain[0]
    assert run(*args, "--coco", ann).exit_code == 2  # --coco without --format coco


def test_detect_skips_a_missing_file_and_goes_on(trained_detector, voc_scenes, tmp_path):
    photo = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[0]
    result = run("detect", photo, tmp_path / "gone.jpg", "--detector", trained_detector, "--mode", "fast", "--json")
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["image"] for x in result.stdout.splitlines()] == [str(photo)]
    assert "skipped" in result.stderr and "gone.jpg: no such file" in result.stderr


def test_fast_rcnn_trains_resumes_and_runs_through_detect_and_eval_detector(voc_scenes, trained_run, tmp_path):
    """--method fast-rcnn: one training stage after the proposals, then the same detect and
    eval-detector commands; its scores are softmax probabilities. A run started again after it
    finished resumes from its cache and writes the same detector."""
    out = tmp_path / "fast"
    args = ["train-detector", voc_scenes, "--backbone", trained_run, "--method", "fast-rcnn"]
    args += ["--fast-rcnn-iters", 40, "--max-boxes", 300, "--out", out, "--workers", 0, "--json"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["fast_rcnn"]["iterations"] == 40 and "svms" not in metrics
    meta = json.loads((out / "detector.json").read_text())
    assert meta["method"] == "fast-rcnn" and meta["config"]["method"] == "fast-rcnn"
    det = load_detector(out)
    assert det.method == "fast-rcnn" and det.model.num_classes == len(det.classes) + 1
    weights = torch.load(out / "heads.pt", weights_only=True)["box_weight"]
    again = run(*args)
    assert again.exit_code == 0 and json.loads(again.stdout)["fast_rcnn"]["resumed_at"] == 40
    assert torch.equal(torch.load(out / "heads.pt", weights_only=True)["box_weight"], weights)

    images = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[:3]
    result = run("detect", *images, "--detector", out, "--threshold", 0, "--json", "--workers", 0)
    assert result.exit_code == 0, result.output
    found = [d for line in result.stdout.splitlines() for d in json.loads(line)["detections"]]
    assert found and all(0 <= d["score"] <= 1 for d in found)
    result = run("eval-detector", voc_scenes, "--split", "val", "--detector", out, "--json", "--workers", 0)
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert 0 < scored["map"] <= 1


def test_a_fast_rcnn_detector_without_its_box_layer_is_refused(voc_scenes, trained_run, tmp_path):
    from alexsuite.errors import CheckpointError
    from alexsuite.fileio import file_sha256

    out = tmp_path / "fast"
    args = ["train-detector", voc_scenes, "--backbone", trained_run, "--method", "fast-rcnn"]
    result = run(*args, "--fast-rcnn-iters", 2, "--max-boxes", 100, "--out", out, "--workers", 0, "-q")
    assert result.exit_code == 0, result.output
    torch.save({"box_weight": torch.zeros(3, 3)}, out / "heads.pt")
    meta = json.loads((out / "detector.json").read_text())
    meta["files"]["heads.pt"] = file_sha256(out / "heads.pt")
    (out / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no box layer"):
        load_detector(out)


def test_svd_keeping_every_singular_value_detects_the_same_and_a_bad_rank_is_one_line(trained_detector, voc_scenes):
    """--svd factors fc6 and fc7 while detecting: at full rank the boxes and scores are the
    unfactored ones; eval-detector records the ranks it ran with; a rank past the layer's width
    is refused in one line that says what to give."""
    images = sorted((voc_scenes / "JPEGImages").glob("val_*.jpg"))[:2]
    width = fc_width(load_detector(trained_detector).model)

    def found(*extra):
        result = run(
            "detect", *images, "--detector", trained_detector, "--threshold", 0, "--json", "--workers", 0, *extra
        )
        assert result.exit_code == 0, result.output
        return [d for line in result.stdout.splitlines() for d in json.loads(line)["detections"]]

    plain, full = found(), found("--svd", f"{width},{width}")
    assert plain and [d["label"] for d in full] == [d["label"] for d in plain]
    assert [d["score"] for d in full] == pytest.approx([d["score"] for d in plain], abs=2e-3)
    result = run("eval-detector", voc_scenes, "--detector", trained_detector, "--svd", "auto", "--json", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["svd"] == "auto" and 0 < json.loads(result.stdout)["map"] <= 1
    bad = run("detect", *images, "--detector", trained_detector, "--svd", f"{width + 1},8", "--workers", 0)
    assert bad.exit_code != 0 and "--svd" in bad.output and "R6,R7" in bad.output and "Traceback" not in bad.output

"""COCO results and COCO AP: our boxes leave as COCO's [x, y, w, h] exactly (a ground truth
written as results scores 1.0), and coco_ap gives what pycocotools' COCOeval gives run by hand."""

import copy
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from alexsuite.boxes import Detections, Truth
from alexsuite.data.detection_sets import read_coco
from alexsuite.errors import DataError, MissingExtra
from alexsuite.evaluation.coco import COCO_STATS, coco_ap, coco_detections, coco_mapping, coco_results
from alexsuite.evaluation.detection import average_precision

CATEGORIES = [{"id": 3, "name": "boot"}, {"id": 7, "name": "shirt"}]
# (image, category, [x, y, w, h], iscrowd): small (< 32²), medium (< 96²) and large objects,
# fractional corners, and a crowd region
OBJECTS = [
    (1, 3, [10.5, 12.0, 9.0, 7.5], 0),
    (1, 7, [40.0, 30.0, 50.0, 44.0], 0),
    (1, 3, [100.0, 20.0, 120.0, 110.0], 0),
    (2, 7, [5.0, 5.0, 20.0, 24.0], 0),
    (2, 3, [60.0, 50.0, 70.0, 60.0], 0),
    (2, 7, [150.0, 100.0, 80.0, 50.0], 1),
    (3, 7, [30.0, 40.0, 100.0, 90.0], 0),
    (3, 3, [170.0, 10.0, 40.0, 40.0], 0),
]


def make_coco(root, objects=OBJECTS, first_id=1, area=True):
    """A COCO file and its images (240 x 180 PNGs) under root/images; ids from `first_id`."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for i in sorted({o[0] for o in objects}):
        Image.new("RGB", (240, 180), (90, 120, 150)).save(root / "images" / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": 240, "height": 180})
    annotations = []
    for n, (img, cat, box, crowd) in enumerate(objects, first_id):
        a = {"id": n, "image_id": img, "category_id": cat, "bbox": box, "iscrowd": crowd}
        if area:
            a["area"] = box[2] * box[3]
        annotations.append(a)
    path = root / "gt.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


def truth_records(data):
    """read_coco's boxes (our corners), written back as detect's records with score 1."""
    return [
        {
            "image": str(a.image),
            "detections": [{"label": lab, "score": 1.0, "box": b} for b, lab in zip(a.boxes.tolist(), a.labels)],
        }
        for a in data.items
    ]


def pycocotools_by_hand(gt_path, results):
    """COCOeval as its README runs it, on the file itself."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(gt_path))
    ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return dict(zip(COCO_STATS, ev.stats.tolist()))


def test_ground_truth_written_as_results_scores_one(tmp_path, capsys):
    gt = make_coco(tmp_path)
    data = read_coco(gt, tmp_path / "images")
    image_ids, category_ids = coco_mapping(gt)
    results = coco_results(truth_records(data), image_ids, category_ids)
    # every box leaves as it came in (the crowd region too): [x1, y1, x2 - x1, y2 - y1], no +1
    assert sorted((r["image_id"], r["category_id"], r["bbox"]) for r in results) == sorted(
        (img, cat, box) for img, cat, box, _ in OBJECTS
    )
    scores = coco_ap(gt, results)
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert scores[name] == pytest.approx(1.0), name
    assert scores["per_category"] == {"boot": pytest.approx(1.0), "shirt": pytest.approx(1.0)}
    # a box one pixel larger each way is not the same box at IoU 0.95: the convention matters
    grown = [{**r, "bbox": [*r["bbox"][:2], r["bbox"][2] + 1, r["bbox"][3] + 1]} for r in results]
    assert coco_ap(gt, grown)["AP"] < 0.95


def jittered(rng, objects):
    """Imperfect detections: each non-crowd object found with 0-3 px of error, one in four missed,
    a duplicate, and false alarms, with scores that do not always rank hits first."""
    results = []
    for img, cat, (x, y, w, h), crowd in objects:
        if crowd or rng.random() < 0.25:
            continue
        dx, dy, dw, dh = rng.uniform(-3, 3, 4)
        box = [x + dx, y + dy, w + dw, h + dh]
        results.append({"image_id": img, "category_id": cat, "bbox": box, "score": float(rng.uniform(0.3, 1))})
    results.append({**results[0], "bbox": [v + 2 for v in results[0]["bbox"]], "score": 0.5})  # a duplicate
    for img in (1, 2, 3):
        for cat in (3, 7):
            x, y = rng.uniform(0, 150, 2)
            box = [x, y, 30.0, 25.0]
            results.append({"image_id": img, "category_id": cat, "bbox": box, "score": float(rng.uniform(0.1, 0.6))})
    return results


def test_coco_ap_equals_pycocotools_run_by_hand_and_sits_near_voc_ap50(tmp_path, capsys):
    gt = make_coco(tmp_path)
    results = jittered(np.random.default_rng(0), OBJECTS)
    ours = coco_ap(gt, results)
    assert capsys.readouterr().out == ""
    by_hand = pycocotools_by_hand(gt, results)
    capsys.readouterr()
    for name in COCO_STATS:
        assert ours[name] == pytest.approx(by_hand[name], abs=1e-12), name
    assert 0 < ours["AP"] < ours["AP50"] < 1

    # our VOC AP (area, IoU 0.5) on the same boxes: COCO's AP50 differs only by its 101-point
    # interpolation, so with few clear boxes the two are close
    data = read_coco(gt, tmp_path / "images")
    names = {c["id"]: c["name"] for c in CATEGORIES}
    classes = data.classes
    truths = [Truth(a.boxes, torch.tensor([classes.index(x) for x in a.labels]), a.difficult) for a in data.items]
    found = []
    for img in (1, 2, 3):
        mine = [r for r in results if r["image_id"] == img]
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in mine)]
        found.append(
            Detections(
                torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor([r["score"] for r in mine]),
                torch.tensor([classes.index(names[r["category_id"]]) for r in mine]),
            )
        )
    voc = average_precision(found, truths, classes)["map"]
    print(f"COCO AP {ours['AP']:.4f}, AP50 {ours['AP50']:.4f}; VOC AP@0.5 (area) {voc:.4f}")
    assert voc == pytest.approx(ours["AP50"], abs=0.02)


def test_no_results_score_zero_where_there_was_something_to_find(tmp_path, capsys):
    gt = make_coco(tmp_path, [o for o in OBJECTS if o[2][2] * o[2][3] >= 32**2])  # no small objects
    scores = coco_ap(gt, [])
    assert capsys.readouterr().out == ""
    assert scores["AP"] == scores["AP50"] == scores["APm"] == scores["APl"] == scores["AR100"] == 0.0
    assert scores["APs"] == scores["ARs"] == -1.0  # COCO's mark for "no objects of that size"
    assert scores["per_category"] == {"boot": 0.0, "shirt": 0.0}


def test_files_counting_ids_from_zero_without_areas_are_scored_as_coco_files(tmp_path):
    # COCOeval records a match by the ground truth's id and reads 0 as "no match"
    gt = make_coco(tmp_path, first_id=0, area=False)
    data = read_coco(gt, tmp_path / "images")
    assert coco_ap(gt, coco_results(truth_records(data), *coco_mapping(gt)))["AP"] == pytest.approx(1.0)


def test_scores_can_be_restricted_to_some_images_and_categories(tmp_path):
    gt = make_coco(tmp_path)
    results = jittered(np.random.default_rng(1), OBJECTS)
    part = coco_ap(gt, results, image_ids=[1, 3], category_ids=[7])
    only = make_coco(tmp_path / "part", [o for o in OBJECTS if o[0] in (1, 3) and o[1] == 7])
    kept = [r for r in results if r["image_id"] in (1, 3) and r["category_id"] == 7]
    assert part["AP"] == pytest.approx(coco_ap(only, kept)["AP"]) and part["images"] == 2
    assert list(part["per_category"]) == ["shirt"]


def test_results_without_a_coco_file_number_images_and_classes_from_one():
    records = [
        {"image": "a/x.jpg", "detections": [{"label": "shirt", "score": 0.5, "box": [1, 2, 11, 22]}]},
        {"image": "b/y.jpg", "detections": []},
        {"image": "c/z.jpg", "detections": [{"label": "boot", "score": 0.25, "box": [0, 0, 4.5, 3]}]},
    ]
    assert coco_results(records, classes=["boot", "hat", "shirt"]) == [
        {"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}
        | {"file_name": "a/x.jpg", "category": "shirt"},
        {"image_id": 3, "category_id": 1, "bbox": [0.0, 0.0, 4.5, 3.0], "score": 0.25}
        | {"file_name": "c/z.jpg", "category": "boot"},
    ]
    assert coco_detections(records, ["boot", "hat", "shirt"]) == coco_results(records, classes=["boot", "hat", "shirt"])
    assert [r["category_id"] for r in coco_results(records)] == [2, 1]  # the labels seen, sorted


def test_results_with_a_coco_file_take_its_ids_by_path_or_unique_file_name(tmp_path):
    gt = make_coco(tmp_path)
    elsewhere = tmp_path / "copy" / "im2.png"  # the same image detected from another folder
    records = [
        {
            "image": str(tmp_path / "images" / "im3.png"),
            "detections": [{"label": "shirt", "score": 1, "box": [0, 0, 5, 5]}],
        },
        {"image": str(elsewhere), "detections": [{"label": "boot", "score": 1, "box": [0, 0, 5, 5]}]},
    ]
    out = coco_detections(records, ["boot", "shirt"], gt)
    assert [(r["image_id"], r["category_id"]) for r in out] == [(3, 7), (2, 3)] and "file_name" not in out[0]
    assert coco_detections(records, ["boot", "shirt"], gt, images=tmp_path / "images") == out
    with pytest.raises(DataError, match="other.png: not among the COCO file's images"):
        coco_detections([{"image": "other.png", "detections": []}], ["boot"], gt)
    records[0]["detections"][0]["label"] = "hat"
    with pytest.raises(DataError, match="'hat': no COCO category of that name"):
        coco_detections(records, ["hat"], gt)
    with pytest.raises(DataError, match=r"results name image_id 9"):
        coco_ap(gt, [{"image_id": 9, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 1}])


def test_missing_pycocotools_is_one_line_saying_how_to_install_it(tmp_path, monkeypatch):
    gt = make_coco(tmp_path)
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)  # what `import` meets when it is not installed
    with pytest.raises(MissingExtra, match=r"pip install 'alexsuite\[coco\]' \(or make setup\)$"):
        coco_ap(gt, [])
    assert coco_results([{"image": "x.png", "detections": []}]) == []  # results need no pycocotools

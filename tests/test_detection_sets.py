"""VOC and COCO annotations: coordinates converted once, clipping counted, bad files named."""

import json

import pytest
from PIL import Image

from alexsuite.data.detection_sets import read_coco, read_voc
from alexsuite.errors import DataError

XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height></size>
{objects}</annotation>"""
OBJ = (
    "<object><name>{label}</name><difficult>{hard}</difficult><bndbox>"
    "<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
)


def make_voc(root, annotations: dict, split="train"):
    for d in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for name, objects in annotations.items():
        Image.new("RGB", (64, 48), (90, 120, 150)).save(root / "JPEGImages" / f"{name}.jpg")
        body = "".join(
            OBJ.format(label=label, hard=hard, x1=b[0], y1=b[1], x2=b[2], y2=b[3]) for label, b, hard in objects
        )
        (root / "Annotations" / f"{name}.xml").write_text(XML.format(name=name, objects=body))
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(annotations) + "\n")
    return root


def test_voc_boxes_become_zero_based_exclusive_and_outside_parts_are_clipped(tmp_path):
    root = make_voc(
        tmp_path / "voc",
        {
            "a": [("cat", (1, 1, 10, 20), 0), ("dog", (30, 5, 80, 40), 1)],  # the dog leaves the 64 px image
            "b": [],  # an image without objects
        },
    )
    data = read_voc(root, "train")
    assert data.classes == ["cat", "dog"] and len(data) == 2
    a = data.items[0]
    assert a.boxes.tolist() == [[0.0, 0.0, 10.0, 20.0], [29.0, 4.0, 64.0, 40.0]]
    assert a.labels == ["cat", "dog"] and a.difficult.tolist() == [False, True]
    assert (data.clipped, data.dropped) == (1, 0)
    assert data.items[1].boxes.shape == (0, 4)


def test_voc_errors_name_the_file_and_the_problem(tmp_path):
    root = make_voc(tmp_path / "voc", {"a": [("cat", (1, 1, 10, 20), 0)]})
    with pytest.raises(DataError, match="no split 'val'.*splits here: train"):
        read_voc(root, "val")
    (root / "Annotations" / "a.xml").write_text("<annotation><filename>a.jpg")
    with pytest.raises(DataError, match=r"a\.xml: malformed XML"):
        read_voc(root, "train")
    (root / "Annotations" / "a.xml").write_text(
        XML.format(name="a", objects=OBJ.format(label="cat", hard=0, x1="one", y1=1, x2=5, y2=5))
    )
    with pytest.raises(DataError, match=r"a\.xml: <xmin> is 'one', not a number"):
        read_voc(root, "train")
    (root / "Annotations" / "a.xml").write_text(
        XML.format(name="a", objects=OBJ.format(label="cat", hard=0, x1=9, y1=1, x2=5, y2=5))
    )
    with pytest.raises(DataError, match="has no area"):
        read_voc(root, "train")


def test_coco_json(tmp_path):
    Image.new("RGB", (50, 40)).save(tmp_path / "x.png")
    spec = {
        "images": [{"id": 7, "file_name": "x.png", "width": 50, "height": 40}],
        "annotations": [
            {"image_id": 7, "category_id": 3, "bbox": [5, 6, 10, 20], "iscrowd": 0},
            {"image_id": 7, "category_id": 3, "bbox": [45, 30, 10, 20], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "boot"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(spec))
    data = read_coco(tmp_path / "ann.json", tmp_path)
    assert data.classes == ["boot"]
    assert data.items[0].boxes.tolist() == [[5.0, 6.0, 15.0, 26.0], [45.0, 30.0, 50.0, 40.0]]
    assert data.items[0].difficult.tolist() == [False, True] and data.clipped == 1
    (tmp_path / "bad.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="bad.json: not a COCO detection file"):
        read_coco(tmp_path / "bad.json", tmp_path)

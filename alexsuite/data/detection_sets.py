"""Detection annotations read from Pascal VOC directories and COCO JSON.

Every box leaves here as 0-based pixel corners [x1, y1, x2, y2] with x2/y2 exclusive
(boxes.py); VOC's 1-based inclusive coordinates and COCO's [x, y, w, h] are
converted once, here. Boxes reaching outside the image are clipped and counted; boxes
with no area left are dropped and counted; a malformed file is a DataError naming the file
and what is wrong with it.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from ..errors import DataError


@dataclass
class Annotation:
    image: Path
    width: int
    height: int
    boxes: torch.Tensor  # float (N, 4), 0-based corners, x2/y2 exclusive
    labels: list[str]
    difficult: torch.Tensor  # bool (N,): VOC 'difficult' / COCO 'iscrowd', ignored when scoring


@dataclass
class DetectionSet:
    items: list[Annotation]
    classes: list[str]
    source: str
    clipped: int = 0  # boxes cut back to the image
    dropped: int = 0  # boxes with no area inside the image
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read the image's size ({e})") from None


def _finish(image: Path, width: int, height: int, raw: list[tuple], source: str, counts: dict) -> Annotation:
    """raw: (x1, y1, x2, y2, label, difficult) in 0-based exclusive corners, unclipped."""
    boxes, labels, difficult = [], [], []
    for x1, y1, x2, y2, label, hard in raw:
        if x2 <= x1 or y2 <= y1:
            raise DataError(f"{source}: box {label} [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has no area (max below min)")
        c = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
        if c != (x1, y1, x2, y2):
            counts["clipped"] += 1
        if c[2] - c[0] < 1 or c[3] - c[1] < 1:
            counts["dropped"] += 1
            continue
        boxes.append(c)
        labels.append(label)
        difficult.append(hard)
    return Annotation(
        image,
        width,
        height,
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        labels,
        torch.tensor(difficult, dtype=torch.bool),
    )


def _text(node, tag: str, source: str) -> str:
    found = node.find(tag)
    if found is None or found.text is None or not found.text.strip():
        raise DataError(f"{source}: missing <{tag}>")
    return found.text.strip()


def _number(node, tag: str, source: str) -> float:
    text = _text(node, tag, source)
    try:
        return float(text)
    except ValueError:
        raise DataError(f"{source}: <{tag}> is {text!r}, not a number") from None


def read_voc_xml(path: Path, images: Path, counts: dict) -> Annotation:
    source = str(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise DataError(f"{source}: malformed XML ({e})") from None
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror})") from None
    image = images / _text(root, "filename", source)
    if not image.is_file():
        raise DataError(f"{source}: its image {image} does not exist")
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width, height = int(_number(size, "width", source)), int(_number(size, "height", source))
    else:
        width, height = _image_size(image)
    raw = []
    for obj in root.findall("object"):
        box = obj.find("bndbox")
        if box is None:
            raise DataError(f"{source}: an <object> without <bndbox>")
        hard = obj.find("difficult")
        # VOC: 1-based, inclusive -> 0-based, exclusive: x1 = xmin - 1, x2 = xmax.
        raw.append(
            (
                _number(box, "xmin", source) - 1,
                _number(box, "ymin", source) - 1,
                _number(box, "xmax", source),
                _number(box, "ymax", source),
                _text(obj, "name", source),
                hard is not None and (hard.text or "0").strip() == "1",
            )
        )
    return _finish(image, width, height, raw, source, counts)


def read_voc(root: Path, split: str = "train") -> DetectionSet:
    """A Pascal VOC directory: Annotations/, JPEGImages/, ImageSets/Main/SPLIT.txt."""
    root = Path(root).expanduser()
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        have = (
            sorted(p.stem for p in (root / "ImageSets" / "Main").glob("*.txt"))
            if (root / "ImageSets" / "Main").is_dir()
            else []
        )
        raise DataError(f"{root}: no split {split!r} ({listing} missing; splits here: {', '.join(have) or 'none'})")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{listing}: lists no images")
    counts = {"clipped": 0, "dropped": 0}
    items = [read_voc_xml(root / "Annotations" / f"{i}.xml", root / "JPEGImages", counts) for i in ids]
    classes = sorted({label for a in items for label in a.labels})
    return DetectionSet(items, classes, f"{root}:{split}", counts["clipped"], counts["dropped"])


def read_coco(annotations: Path, images: Path) -> DetectionSet:
    """COCO detection JSON (images, annotations with bbox [x, y, w, h], categories)."""
    annotations = Path(annotations).expanduser()
    try:
        data = json.loads(annotations.read_text())
        cats = {c["id"]: c["name"] for c in data["categories"]}
        entries = data["images"]
        boxes_by_image: dict = {}
        for a in data.get("annotations", []):
            boxes_by_image.setdefault(a["image_id"], []).append(a)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{annotations}: not a COCO detection file ({type(e).__name__}: {e})") from None
    counts = {"clipped": 0, "dropped": 0}
    items = []
    for entry in entries:
        source = f"{annotations} (image id {entry.get('id')})"
        try:
            image = Path(images) / entry["file_name"]
            raw = [
                (
                    a["bbox"][0],
                    a["bbox"][1],
                    a["bbox"][0] + a["bbox"][2],
                    a["bbox"][1] + a["bbox"][3],
                    cats[a["category_id"]],
                    bool(a.get("iscrowd", 0)),
                )
                for a in boxes_by_image.get(entry["id"], [])
            ]
        except (KeyError, IndexError, TypeError) as e:
            raise DataError(f"{source}: malformed entry ({type(e).__name__}: {e})") from None
        if not image.is_file():
            raise DataError(f"{source}: its image {image} does not exist")
        width, height = entry.get("width"), entry.get("height")
        if not width or not height:
            width, height = _image_size(image)
        items.append(_finish(image, int(width), int(height), raw, source, counts))
    if not items:
        raise DataError(f"{annotations}: lists no images")
    return DetectionSet(items, sorted(set(cats.values())), str(annotations), counts["clipped"], counts["dropped"])


def read_detection_set(data, split: str = "train", images=None) -> DetectionSet:
    """DATA as the detection commands take it: a COCO JSON file (its images under `images`,
    else next to it) or a Pascal VOC directory and one of its splits."""
    data = Path(data).expanduser()
    if data.suffix.lower() == ".json":
        return read_coco(data, Path(images).expanduser() if images else data.parent)
    if not data.is_dir():
        raise DataError(f"{data}: neither a Pascal VOC directory nor a COCO .json file")
    return read_voc(data, split)

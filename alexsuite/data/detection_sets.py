"""Detection annotations read from Pascal VOC directories and COCO JSON.

Every box leaves here as 0-based pixel corners [x1, y1, x2, y2] with x2/y2 exclusive
(boxes.py); VOC's 1-based inclusive coordinates and COCO's [x, y, w, h] are
converted once, here. Boxes reaching outside the image are clipped and counted; boxes
with no area left are dropped and counted; a malformed file is a DataError naming the file
and what is wrong with it.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import DataError, ImageDecodeError
from ..fileio import display_path
from ..settings import finite
from .decode import image_size

MAX_COORDINATE = 1 << 20  # pixels: beyond any real image, within float32's exact integers


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
    coco_file: Path | None = None  # COCO: the annotation file, which pycocotools' AP reads again
    image_root: Path | None = None  # COCO: the folder its file_names are under

    def __len__(self) -> int:
        return len(self.items)


def _image_size(path: Path) -> tuple[int, int]:
    """The size in the image's header (no pixels decoded), through the decoder's checks."""
    try:
        return image_size(path)
    except ImageDecodeError as e:
        raise DataError(f"{e}: cannot read the image's size") from None


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
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"{source}: <{tag}> is {text!r}, not a number")
    return value


def read_voc_xml(path: Path, images: Path, counts: dict) -> Annotation:
    source = str(path)
    if not path.is_file():  # a named pipe would block the parser
        raise DataError(
            f"{source}: {'not a regular file' if path.exists() else 'missing'}; every listed image needs one"
        )
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, LookupError, ValueError, RecursionError) as e:  # LookupError: an unknown encoding
        raise DataError(f"{source}: malformed XML ({type(e).__name__}: {e})") from None
    except OSError as e:
        raise DataError(f"{source}: cannot read ({e.strerror})") from None
    image = _inside(images, _text(root, "filename", source), source)
    size = root.find("size")
    if size is not None and size.find("width") is not None:
        width, height = int(_number(size, "width", source)), int(_number(size, "height", source))
        if width < 1 or height < 1:
            raise DataError(f"{source}: image size {width}x{height} is not a real size")
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
    try:
        ids = [line.split()[0] for line in listing.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{listing}: not a readable list of image names ({e})") from None
    if not ids:
        raise DataError(f"{listing}: lists no images")
    _no_repeats(ids, str(listing))
    counts = {"clipped": 0, "dropped": 0}
    items = [read_voc_xml(root / "Annotations" / f"{i}.xml", root / "JPEGImages", counts) for i in ids]
    classes = sorted({label for a in items for label in a.labels})
    return DetectionSet(items, classes, f"{root}:{split}", counts["clipped"], counts["dropped"])


def read_coco(annotations: Path, images: Path) -> DetectionSet:
    """COCO detection JSON (images, annotations with bbox [x, y, w, h], categories). Every
    annotation must name a listed image and category and hold four numbers: a file that does
    not is refused with the first such entry named, rather than scored without it."""
    annotations = Path(annotations).expanduser()
    data = _coco_json(annotations)
    cats = _coco_categories(data, annotations)
    entries = data["images"]
    for entry in entries:
        if not isinstance(entry, dict) or not _key(entry.get("id")) or not isinstance(entry.get("file_name"), str):
            raise DataError(f"{annotations}: image entry {str(entry)[:80]} needs an id and a file_name")
    ids = [e["id"] for e in entries]
    _no_repeats(ids, f"{annotations}: images")
    ids = set(ids)
    boxes_by_image: dict = {}
    for a in data["annotations"]:
        raw = _coco_box(a, cats, ids, annotations)
        boxes_by_image.setdefault(a["image_id"], []).append(raw)
    counts = {"clipped": 0, "dropped": 0}
    items = []
    for entry in entries:
        source = f"{annotations} (image id {entry['id']!r})"
        image = _inside(Path(images), entry["file_name"], source)
        width, height = entry.get("width"), entry.get("height")
        if not (_size(width) and _size(height)):  # absent or odd: the image's own header says
            width, height = _image_size(image)
        items.append(_finish(image, width, height, boxes_by_image.get(entry["id"], []), source, counts))
    if not items:
        raise DataError(f"{annotations}: lists no images")
    classes = sorted(set(cats.values()))
    return DetectionSet(
        items,
        classes,
        str(annotations),
        counts["clipped"],
        counts["dropped"],
        coco_file=annotations,
        image_root=Path(images),
    )


def _coco_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{path}: not a readable JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f'{path}: not a COCO detection file (no "images" list)')
    if not isinstance(data.get("annotations"), list):
        raise DataError(f'{path}: not a COCO detection file (no "annotations" list)')
    if not data["annotations"]:
        raise DataError(f"{path}: lists no annotations, so there is nothing to train on or score")
    return data


def _coco_categories(data: dict, path: Path) -> dict:
    cats = data.get("categories")
    if not isinstance(cats, list) or not all(
        isinstance(c, dict) and _key(c.get("id")) and isinstance(c.get("name"), str) for c in cats
    ):
        raise DataError(f'{path}: "categories" must be a list of {{"id", "name"}} objects')
    return {c["id"]: c["name"] for c in cats}


def _coco_box(a, cats: dict, image_ids: set, path: Path) -> tuple:
    """One annotation as (x1, y1, x2, y2, label, crowd), checked."""
    where = f"{path} (annotation id {a.get('id') if isinstance(a, dict) else a!r})"
    if not isinstance(a, dict):
        raise DataError(f"{where}: an annotation must be an object")
    if not _key(a.get("image_id")) or a.get("image_id") not in image_ids:
        raise DataError(f"{where}: image_id {a.get('image_id')!r} is not among the file's images")
    if not _key(a.get("category_id")) or a.get("category_id") not in cats:
        raise DataError(f"{where}: category_id {a.get('category_id')!r} is not among its categories")
    box = a.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
        raise DataError(f"{where}: bbox must be four numbers [x, y, width, height], got {box!r}")
    x, y, w, h = (float(v) for v in box)
    crowd = a.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):  # True and False are 1 and 0; "0" is not
        raise DataError(f"{where}: iscrowd must be 0 or 1, got {crowd!r}")
    return (x, y, x + w, y + h, cats[a["category_id"]], bool(crowd))


def _finite(v) -> bool:
    return finite(v, -MAX_COORDINATE, MAX_COORDINATE)


def _size(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_COORDINATE


def _key(v) -> bool:
    """An id COCO files use: an int or a string (never a list, a bool or a float)."""
    return isinstance(v, (int, str)) and not isinstance(v, bool)


def _no_repeats(ids: list, where: str) -> None:
    seen, repeated = set(), []
    for i in ids:
        if i in seen:
            repeated.append(i)
        seen.add(i)
    if repeated:
        raise DataError(f"{where}: lists {repeated[0]!r} more than once ({len(repeated)} repeat(s)); each image once")


def _inside(folder: Path, name: str, source: str) -> Path:
    """The image an annotation names, which must be a file inside the dataset's image folder:
    a name such as ../../secret.jpg or /etc/passwd is refused, never read."""
    if "\0" in name or not name.strip():
        raise DataError(f"{source}: image name {name!r} is not a file name")
    path = folder / name
    if Path(name).is_absolute() or not path.resolve().is_relative_to(folder.resolve()):
        raise DataError(
            f"{source}: its image {name!r} lies outside {display_path(folder)}; annotations must name "
            "images inside the dataset"
        )
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise DataError(f"{source}: its image {display_path(path)} {what}")
    return path


def read_detection_set(data, split: str = "train", images=None) -> DetectionSet:
    """DATA as the detection commands take it: a COCO JSON file (its images under `images`,
    else next to it) or a Pascal VOC directory and one of its splits."""
    data = Path(data).expanduser()
    if data.suffix.lower() == ".json":
        if not data.is_file():
            raise DataError(f"{display_path(data)}: not a regular file; give a COCO .json file")
        return read_coco(data, Path(images).expanduser() if images else data.parent)
    if not data.is_dir():
        raise DataError(f"{data}: neither a Pascal VOC directory nor a COCO .json file")
    return read_voc(data, split)

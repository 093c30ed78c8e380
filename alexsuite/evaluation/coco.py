"""COCO detection results and COCO's box AP (COCO detection evaluation; docs/references.md).

Results are COCO's list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"}. Our boxes
are 0-based corners, x2/y2 exclusive (boxes.py), and data/detection_sets.py reads COCO's
[x, y, w, h] as x1 = x, x2 = x + w with no +1, so the way out is exactly
[x1, y1, x2 - x1, y2 - y1]: a ground-truth box written as a result is the same box.

AP is pycocotools' COCOeval (bbox), the reference implementation: precision averaged over the
IoU thresholds .50:.05:.95 and 101 recall points, at most 100 detections per image and class,
also by object area (small < 32², medium < 96², large). pycocotools is optional
(`alexsuite[coco]`) and imported only when AP is asked for.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

from ..errors import DataError, MissingExtra

# COCOeval.stats, in its order (cocoeval.py `_summarizeDets`)
COCO_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
INSTALL = "pip install 'alexsuite[coco]' (or make setup)"


def xywh(box) -> list[float]:
    """[x1, y1, x2, y2] corners (x2/y2 exclusive) as COCO's [x, y, width, height]: no +1."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return [round(v, 4) for v in (x1, y1, x2 - x1, y2 - y1)]  # no float noise (14.699999...) in the JSON


def load_coco(coco) -> dict:
    """A COCO detection file (a path) or its parsed dict, checked for what mapping and scoring
    read: "images" with an id and a file_name, "categories" with an id and a name."""
    if isinstance(coco, dict):
        data, where = coco, "COCO annotations"
    else:
        where = str(coco)
        try:
            data = json.loads(Path(coco).expanduser().read_text())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
            raise DataError(f"{where}: not a readable JSON file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DataError(f'{where}: not a COCO detection file (no "images" list)')
    if not all(isinstance(i, dict) and "id" in i and isinstance(i.get("file_name"), str) for i in data["images"]):
        raise DataError(f'{where}: every entry of "images" needs an id and a file_name')
    cats = data.get("categories")
    if not isinstance(cats, list) or not all(isinstance(c, dict) and "id" in c and "name" in c for c in cats):
        raise DataError(f'{where}: "categories" must be a list of {{"id", "name"}} objects')
    return data


def coco_mapping(coco, image_root=None) -> tuple[dict, dict]:
    """(image path -> image_id, category name -> category_id) of a COCO set, a path or its dict.
    Image paths are image_root / file_name, resolved, as read_coco finds the images; the root
    defaults to the JSON file's folder (the working directory for a dict). A name that two
    categories share keeps the first id."""
    data = load_coco(coco)
    if image_root is None:
        image_root = Path(".") if isinstance(coco, dict) else Path(coco).expanduser().parent
    root = Path(image_root).expanduser()
    images = {_key(root / i["file_name"]): i["id"] for i in data["images"]}
    categories = {}
    for c in data["categories"]:
        categories.setdefault(str(c["name"]), c["id"])
    return images, categories


def _key(path) -> str:
    return str(Path(path).expanduser().resolve())


def image_id(path, image_ids: dict, by_name: dict | None = None):
    """The id of the image at `path`: by its resolved path, else by its file name when exactly
    one listed image has that name (images detected from another copy of the folder)."""
    found = image_ids.get(_key(path))
    if found is not None:
        return found
    by_name = by_name if by_name is not None else _unique_names(image_ids)
    found = by_name.get(Path(path).name)
    if found is None:
        raise DataError(f"{path}: not among the COCO file's images (by path, or by a file name only one of them has)")
    return found


def _unique_names(image_ids: dict) -> dict:
    names: dict = {}
    for key, i in image_ids.items():
        name = Path(key).name
        names[name] = None if name in names else i  # a shared name matches nothing
    return {n: i for n, i in names.items() if i is not None}


def coco_results(records, image_ids=None, category_ids=None, classes=None) -> list[dict]:
    """detect's records ({"image", "detections": [{"label", "score", "box": [x1, y1, x2, y2]}]})
    as a COCO results list. With a COCO set's mapping (coco_mapping), its ids; without, image_id
    is the record's 1-based position (and "file_name" its image) and category_id the label's
    1-based index in `classes` (default: the labels seen, sorted, as a detector orders its
    classes; and "category" its name)."""
    records = list(records)
    if category_ids is None:
        names = classes if classes is not None else sorted({d["label"] for r in records for d in r["detections"]})
        categories = {c: i + 1 for i, c in enumerate(names)}
    else:
        categories = category_ids
    by_name = _unique_names(image_ids) if image_ids is not None else None
    out = []
    for n, record in enumerate(records, 1):
        img = n if image_ids is None else image_id(record["image"], image_ids, by_name)
        for d in record["detections"]:
            if d["label"] not in categories:
                have = ", ".join(map(str, categories)) or "none"
                raise DataError(f"{d['label']!r}: no COCO category of that name (there are: {have})")
            result = {"image_id": img, "category_id": categories[d["label"]], "bbox": xywh(d["box"])}
            result["score"] = float(d["score"])
            if image_ids is None:
                result["file_name"] = str(record["image"])
            if category_ids is None:
                result["category"] = d["label"]
            out.append(result)
    return out


def coco_detections(records, classes, annotations=None, images=None) -> list[dict]:
    """`detect --format coco`: detect's records as a COCO results list, with the image and
    category ids of the COCO annotation file `annotations` (its images under `images`, else next
    to it), or without one, 1-based positions and indices into `classes` (the detector's)."""
    if annotations is None:
        return coco_results(records, classes=classes)
    image_ids, category_ids = coco_mapping(annotations, images)
    return coco_results(records, image_ids, category_ids)


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise MissingExtra(f"COCO AP needs pycocotools: {INSTALL}") from None
    return COCO, COCOeval


def _ground_truth(data: dict) -> dict:
    """The file's boxes as COCOeval reads them, on copies: ids renumbered 1..N (COCOeval records
    a match by the ground truth's id and reads id 0 as no match), iscrowd 0 and area = w * h
    where absent (COCO's own files give the mask's area)."""
    if not isinstance(data.get("annotations"), list):
        raise DataError('COCO ground truth needs an "annotations" list')
    anns = []
    for n, a in enumerate(data["annotations"], 1):
        box = a.get("bbox") if isinstance(a, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise DataError(f"COCO ground truth: annotation {n} has no bbox [x, y, width, height]")
        area = a.get("area") if _number(a.get("area")) else box[2] * box[3]
        anns.append(
            {
                "id": n,
                "image_id": a.get("image_id"),
                "category_id": a.get("category_id"),
                "bbox": [float(v) for v in box],
                "area": float(area),
                "iscrowd": int(bool(a.get("iscrowd", 0))),
            }
        )
    return {"images": data["images"], "categories": data["categories"], "annotations": anns}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _detections(COCO, gt, results: list[dict]):
    """The results as COCOeval's second COCO object. loadRes fails on an empty list, so no results
    is an empty set over the same images: COCOeval then gives 0 where there were objects to find
    and -1 where there were none, as for any category it finds nothing of."""
    known = set(gt.getImgIds())
    unknown = [r["image_id"] for r in results if r["image_id"] not in known]
    if unknown:
        raise DataError(f"COCO results name image_id {unknown[0]!r}, which the ground truth does not list")
    if results:
        return gt.loadRes([dict(r) for r in results])  # copies: loadRes adds keys to each result
    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
    dt.createIndex()
    return dt


def coco_ap(ground_truth, results, image_ids=None, category_ids=None) -> dict:
    """COCO's box AP and AR (COCO_STATS) by pycocotools' COCOeval on the ground truth (a COCO
    file or its dict) and a results list (coco_results), over `image_ids` and `category_ids`
    (default: all the file lists), plus AP@[.50:.95] per category name ("per_category"). -1 means
    nothing to measure (no objects in that area range), as COCO reports it."""
    COCO, COCOeval = _pycocotools()
    data = _ground_truth(load_coco(ground_truth))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress; --json must stay JSON
        gt = COCO()
        gt.dataset = data
        gt.createIndex()
        ev = COCOeval(gt, _detections(COCO, gt, list(results)), "bbox")
        if image_ids is not None:
            ev.params.imgIds = list(image_ids)
        if category_ids is not None:
            ev.params.catIds = list(category_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    scores = {name: float(v) for name, v in zip(COCO_STATS, ev.stats)}
    scores["per_category"] = _per_category(ev, gt)
    scores["images"] = len(ev.params.imgIds)
    return scores


def _per_category(ev, gt) -> dict:
    """AP@[.50:.95] of each category: its slice of COCOeval's precision [IoU, recall, category,
    area, maxDets] at area 'all' and 100 detections, -1 entries (no objects) left out."""
    precision = ev.eval["precision"]
    out = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[str(gt.cats[cat]["name"])] = float(p.mean()) if p.size else -1.0
    return out

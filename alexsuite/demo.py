"""`alexsuite demo`: the whole suite on built-in data only, offline, in minutes on a CPU.

Stages, each calling the same library functions as the command named beside it, so the
demo's numbers are the numbers those commands print for the same files:

1. train      alexnet-small on the bundled Fashion-MNIST subset         (alexsuite train)
2. evaluate   10-crop top-1 / top-5 on its test split                    (alexsuite eval --ten-crop)
3. index      the training images, written out as PNG files, into FAISS  (alexsuite index)
4. search     one test image of each class -> a result sheet             (alexsuite search --sheet)
5. retrieval  mAP and precision@k, test images against training images   (alexsuite eval-retrieval)
6. scenes     articles pasted onto the bundled photographs (Pascal VOC): training scenes on six
              photos, test scenes on two others and on test-split articles
7. detector   R-CNN on the training scenes                               (alexsuite train-detector)
8. detect     mAP and seconds per image on the test scenes, boxes drawn  (alexsuite eval-detector, detect)
9. report     report.html beside its pictures

Running it again over the same --out carries on: training resumes from last.pt, the index
adds nothing new, and the detector reuses its stage caches."""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import viz
from .data import fashion_mnist
from .data.datasets import DEFAULT_DATASET
from .data.scenes import TEST_PHOTOS, TRAIN_PHOTOS, SceneSetSettings, make_scene_set
from .detection.config import DetectorConfig
from .detection.detector import load_detector
from .detection.evaluate import evaluate_detector
from .detection.finetune import FinetuneSettings
from .detection.inference import DetectSettings, run_detector
from .detection.training import train_detector
from .devices import resolve_device
from .errors import ConfigError
from .fileio import atomic_write_bytes, atomic_write_text
from .models.checkpoint import load_model
from .proposals import ProposalSettings
from .report import write_report
from .reporting import Reporter, StageTimer
from .retrieval.evaluate import RetrievalEvalSettings, evaluate_model_retrieval
from .retrieval.indexer import IndexOptions, update_index
from .retrieval.search import Searcher
from .retrieval.store import IndexStore
from .settings import default_of, setting
from .training.config import TrainConfig
from .training.evaluate import evaluate, evaluation_set
from .training.run import train


@dataclass
class DemoConfig:
    epochs: int = setting(8, "Training epochs of alexnet-small (the paper's recipe otherwise).", "AlexNet §5")
    metric: str = setting("cosine", "Retrieval distance: cosine ranks fc7 best on this data (docs/benchmarks.md).")
    search_k: int = setting(8, "Results per query on the search sheet.")
    train_scenes: int = setting(default_of(SceneSetSettings, "train"), "Detection training scenes.")
    test_scenes: int = setting(default_of(SceneSetSettings, "test"), "Detection test scenes.")
    finetune_iters: int = setting(
        1000, "R-CNN fine-tuning iterations (128 warped windows each).", "rcnn fine-tuning solver"
    )
    finetune_lr: float = setting(
        0.04,
        "Fine-tuning learning rate: R-CNN's 0.001 assumes an ImageNet backbone; "
        "one that only saw articles on black needs more.",
        "rcnn fine-tuning solver",
    )
    max_boxes: int = setting(
        default_of(ProposalSettings, "max_boxes"), "Selective-search boxes per image.", "R-CNN §2.2"
    )
    detect_mode: str = setting(
        "rcnn", "How the test photos are read: rcnn (the paper) or fast (RoI pooling on conv5).", "R-CNN §2.2"
    )
    pictures: int = setting(6, "Test scenes drawn with their detections.")
    picture_threshold: float = setting(
        default_of(DetectSettings, "threshold"),
        "Draw the boxes whose calibrated probability of being right is above this.",
        "Platt 1999",
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.")
    workers: int = setting(2, "Decoding and proposal processes.")
    seed: int = setting(0, "Seed of training, scenes and fine-tuning.")


@dataclass
class DemoResult:
    out: Path
    metrics: dict = field(default_factory=dict)
    stages: list[dict] = field(default_factory=list)  # {"stage", "seconds", "summary"} in order
    pictures: dict = field(default_factory=dict)  # name -> path relative to out (or list of them)
    commands: dict = field(default_factory=dict)  # metric group -> the command that prints it alone

    def to_dict(self) -> dict:
        return {
            "out": str(self.out),
            "metrics": self.metrics,
            "stages": self.stages,
            "total_seconds": round(sum(s["seconds"] for s in self.stages), 2),
            "pictures": self.pictures,
            "commands": self.commands,
        }


def export_images(images: np.ndarray, labels: np.ndarray, classes: list[str], folder: Path) -> None:
    """Write (N, H, W) uint8 images as folder/<class>/<class>_<n>.png, n counting within the class
    (the layout `index` labels by); files already there are kept, so a second run costs nothing."""
    seen = [0] * len(classes)
    for img, lab in zip(images, labels):
        name = classes[int(lab)]
        path = folder / name / f"{name}_{seen[int(lab)]:04d}.png"
        seen[int(lab)] += 1
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, lambda f, img=img: Image.fromarray(img).save(f, format="PNG"))


def _index_model(index_dir: Path) -> str | None:
    """The fingerprint of the model an existing index was built with (None: no index yet)."""
    manifest = index_dir / "manifest.json"
    return json.loads(manifest.read_text())["model"]["fingerprint"] if manifest.exists() else None


@dataclass
class _Demo:
    """What the stages share: the settings, where they write, and what earlier stages made."""

    cfg: DemoConfig
    out: Path
    device: object
    reporter: Reporter
    result: DemoResult
    loaded: object = None  # the trained model (train/last.pt)
    test_set: object = None  # the test scenes

    @property
    def model_path(self) -> Path:
        return self.out / "train" / "last.pt"  # the last epoch: best.pt is chosen on the test split itself

    @property
    def metrics(self) -> dict:
        return self.result.metrics


def run_demo(cfg: DemoConfig, out: Path, reporter: Reporter = Reporter()) -> DemoResult:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: a file is in the way; give a folder (default runs/demo)")
    out.mkdir(parents=True, exist_ok=True)
    demo = _Demo(cfg, out, resolve_device(cfg.device), reporter, DemoResult(out))
    stage = StageTimer(reporter, total=len(STAGES), records=demo.result.stages)
    for name, run in STAGES:
        with stage(name) as record:
            record["summary"] = run(demo)
    # after the report stage, so the JSON holds its time too
    atomic_write_text(out / "demo.json", json.dumps({"config": asdict(cfg), **demo.result.to_dict()}, indent=2))
    return demo.result


def _train(demo: _Demo) -> str:
    cfg, run_dir = demo.cfg, demo.out / "train"
    tc = TrainConfig(data=DEFAULT_DATASET, epochs=cfg.epochs, device=cfg.device, workers=cfg.workers, seed=cfg.seed)
    resume = run_dir if (run_dir / "last.pt").exists() else None
    run = train(tc, run_dir=run_dir, resume=resume, reporter=demo.reporter)
    last = run.history[-1]
    demo.metrics["training"] = {
        "epochs": len(run.history),
        "val_top1": last["val_top1"],
        "val_top5": last["val_top5"],
        "train_loss": last["train_loss"],
        "images_per_s": last["images_per_s"],
        "config": json.loads((run.run_dir / "config.json").read_text()),
    }
    demo.result.pictures.update(curves="train/curves.png", filters="train/conv1_filters.png")
    return f"alexnet-small, {len(run.history)} epochs, validation top-1 {last['val_top1']:.3f} -> {run.run_dir}"


def _evaluate(demo: _Demo) -> str:
    demo.loaded = loaded = load_model(demo.model_path, demo.device)
    test_set = evaluation_set(loaded, DEFAULT_DATASET)
    ten = evaluate(loaded.model, test_set, loaded.preprocess, demo.device, ten_crop=True, workers=0)
    demo.metrics["classification"] = {
        "top1": ten["top1"],
        "top5": ten["top5"],
        "top1_centre": ten["centre_top1"],
        "top5_centre": ten["centre_top5"],
        "images": ten["images"],
    }
    demo.result.commands["classification"] = f"alexsuite eval {demo.model_path} --ten-crop --json"
    return f"10-crop top-1 {ten['top1']:.3f}, top-5 {ten['top5']:.3f} on {ten['images']:,} test images"


def _index(demo: _Demo) -> str:
    images_dir, index_dir = demo.out / "images", demo.out / "index"
    for split in ("train", "test"):
        arrays, labels = fashion_mnist.load_mini(split)
        export_images(arrays, labels, fashion_mnist.CLASSES, images_dir / split)
    # a re-run that trained further has new weights: the old vectors cannot stay beside new ones
    rebuild = _index_model(index_dir) not in (None, demo.loaded.fingerprint)
    opts = IndexOptions(metric=demo.cfg.metric, workers=demo.cfg.workers, rebuild=rebuild)
    report = update_index(
        index_dir,
        demo.loaded,
        images_dir / "train",
        opts,
        demo.device,
        progress=lambda total: demo.reporter.progress(total, "embed"),
        warn=demo.reporter.warn,
    )
    store = IndexStore.open_read(index_dir)
    store.close()
    demo.metrics["index"] = {
        "images": report.total,
        "added": report.added,
        "seconds": round(report.seconds, 2),
        "images_per_s": round(report.images_per_s, 1),
        "metric": store.spec.metric,
        "factory": store.spec.factory,
    }
    return f"{report.total:,} training images in {index_dir} ({report.added:,} added)"


def _search(demo: _Demo) -> str:
    k, images_dir, sheet = demo.cfg.search_k, demo.out / "images", demo.out / "search.png"
    queries = [images_dir / "test" / c / f"{c}_0000.png" for c in fashion_mnist.CLASSES]
    store = IndexStore.open_read(demo.out / "index")
    try:
        hits = Searcher(store, demo.loaded, demo.device).search_files(queries, k)
    finally:
        store.close()
    viz.search_sheet(hits, sheet)
    same = [sum(h.label == Path(r.query).parent.name for h in r.results) / max(len(r.results), 1) for r in hits]
    demo.metrics["search"] = {"queries": len(hits), "k": k, "same_class": float(np.mean(same))}
    demo.result.pictures["search"] = "search.png"
    demo.result.commands["search"] = (
        f"alexsuite search {images_dir / 'test' / 'bag' / 'bag_0000.png'} -k {k} --index {demo.out / 'index'}"
    )
    return f"{len(hits)} queries, {np.mean(same):.0%} of their {k} nearest images share the query's class -> {sheet}"


def _retrieval(demo: _Demo) -> str:
    opts = RetrievalEvalSettings(
        data=DEFAULT_DATASET, metric=demo.cfg.metric, ks=(1, 10, 100), workers=demo.cfg.workers
    )
    r = evaluate_model_retrieval(
        demo.loaded, opts, demo.device, progress=lambda total, name: demo.reporter.progress(total, name)
    )
    demo.metrics["retrieval"] = {
        k: r[k]
        for k in ("mAP", "precision@1", "precision@10", "precision@100", "queries", "database", "metric", "factory")
    }
    demo.result.commands["retrieval"] = (
        f"alexsuite eval-retrieval --model {demo.model_path} --metric {demo.cfg.metric} --json"
    )
    return (
        f"mAP {r['mAP']:.3f}, P@10 {r['precision@10']:.3f} ({r['queries']:,} queries, "
        f"{r['database']:,} database images)"
    )


def _scenes(demo: _Demo) -> str:
    cfg, scenes = demo.cfg, demo.out / "scenes"
    demo.test_set = make_scene_set(scenes, SceneSetSettings(cfg.train_scenes, cfg.test_scenes, cfg.seed))
    objects = sum(len(a.labels) for a in demo.test_set.items)
    demo.metrics["scenes"] = {"train": cfg.train_scenes, "test": cfg.test_scenes, "test_objects": objects}
    return (
        f"{cfg.train_scenes} training scenes on {len(TRAIN_PHOTOS)} photos, {cfg.test_scenes} test "
        f"scenes ({objects} objects) on {len(TEST_PHOTOS)} other photos -> {scenes}"
    )


def _detector(demo: _Demo) -> str:
    cfg = demo.cfg
    dc = DetectorConfig(
        data=str(demo.out / "scenes"),
        backbone=str(demo.model_path),
        finetune=FinetuneSettings(iterations=cfg.finetune_iters, lr=cfg.finetune_lr, seed=cfg.seed),
        proposals=ProposalSettings(max_boxes=cfg.max_boxes),
        device=cfg.device,
        workers=cfg.workers,
    )
    tm = train_detector(dc, demo.out / "detector", demo.reporter).metrics
    demo.metrics["detector_training"] = {
        "proposal_recall": tm["proposal_recall"]["recall"],
        "boxes_per_image": tm["proposal_recall"]["boxes_per_image"],
        "finetune_loss": tm["finetune"].get("final_loss"),
        "finetune_resumed_at": tm["finetune"].get("resumed_at"),
        "seconds": tm["seconds"],
    }
    return (
        f"R-CNN on {tm['training_images']} scenes: proposal recall {tm['proposal_recall']['recall']:.2f}, "
        f"{cfg.finetune_iters} fine-tuning iterations, {len(tm['svms'])} SVMs -> {demo.out / 'detector'}"
    )


def _detect(demo: _Demo) -> str:
    cfg, out, test_set = demo.cfg, demo.out, demo.test_set
    det = load_detector(out / "detector", demo.device)
    # no proposal cache: seconds per image always include selective search, as eval-detector's do
    with closing(demo.reporter.progress(len(test_set), f"detect ({cfg.detect_mode})")) as bar:
        ev = evaluate_detector(det, test_set, DetectSettings(mode=cfg.detect_mode, workers=cfg.workers), on_image=bar)
    demo.metrics["detection"] = {
        k: ev[k]
        for k in ("mode", "images", "map", "map_voc07", "map_no_regression", "seconds_per_image", "proposal_recall")
    }
    demo.metrics["detection"]["ap"] = {c: row["ap"] for c, row in ev["per_class"].items()}
    demo.result.pictures["detections"] = _draw_detections(det, test_set.items[: cfg.pictures], cfg, out)
    demo.result.commands["detection"] = (
        f"alexsuite eval-detector {out / 'scenes'} --split test --detector "
        f"{out / 'detector'} --mode {cfg.detect_mode} --json"
    )
    return (
        f"mAP@0.5 {ev['map']:.3f} ({ev['map_no_regression']:.3f} without box regression) on "
        f"{ev['images']} new photos, {ev['seconds_per_image']['total']:.2f} s per image"
    )


def _draw_detections(det, items, cfg: DemoConfig, out: Path) -> list[dict]:
    """The first test scenes with the boxes `alexsuite detect --threshold` would keep, drawn;
    [{"src", "truth", "found"}] for the report's captions."""
    drawn = []
    (out / "detections").mkdir(exist_ok=True)
    opts = DetectSettings(mode=cfg.detect_mode, threshold=cfg.picture_threshold, workers=cfg.workers)
    results = run_detector(det, [a.image for a in items], opts)
    for item, r in zip(items, results):
        if r.error is not None:
            continue
        src = f"detections/{Path(r.image).stem}.png"
        r.save(out / src)
        found = zip(r.detections.labels.tolist(), r.detections.scores.tolist())
        drawn.append(
            {"src": src, "truth": list(item.labels), "found": [f"{det.classes[int(c)]} {sc:.2f}" for c, sc in found]}
        )
    return drawn


def _report(demo: _Demo) -> str:
    return str(write_report(demo.result, demo.cfg))


STAGES = [
    ("train", _train),
    ("evaluate", _evaluate),
    ("index", _index),
    ("search", _search),
    ("retrieval", _retrieval),
    ("scenes", _scenes),
    ("detector", _detector),
    ("detect", _detect),
    ("report", _report),
]

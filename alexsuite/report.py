"""report.html for a demo run: one page, its pictures beside it (relative links, so the
folder can be moved or zipped whole), readable without a server or a network."""

from __future__ import annotations

import html
import platform
import time
from pathlib import Path

from .fileio import atomic_write_text
from .version import __version__

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { padding: 0.3em 0.8em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }
th { background: #f6f6f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f3f3f3; padding: 0.1em 0.3em; border-radius: 3px; font-size: 0.9em; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1em; }
.grid figure { margin: 0; }
"""


_FILTERS_CAPTION = "conv1 filters, as in the paper's Figure 3 (greyscale data: each shows what it does to a grey image)"
_SCHEDULES = {
    "plateau": "divided by 10 when validation accuracy stops improving",
    "cosine": "cosine decay",
    "onecycle": "one-cycle schedule",
}


def _e(value) -> str:
    return html.escape(str(value))


def _figure(src: str, caption: str) -> str:
    return f'<figure><img src="{_e(src)}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _metric_rows(m: dict, commands: dict) -> str:
    c, r, d = m["classification"], m["retrieval"], m["detection"]
    rows = [
        (
            "Classification",
            "top-1 / top-5, 10-crop",
            f"{c['top1']:.3f} / {c['top5']:.3f}",
            f"{c['images']:,} test images; centre crop {c['top1_centre']:.3f} / {c['top5_centre']:.3f}",
            commands.get("classification"),
        ),
        (
            "Retrieval",
            "mAP / precision@10",
            f"{r['mAP']:.3f} / {r['precision@10']:.3f}",
            f"{r['queries']:,} queries against {r['database']:,} images, fc7, {r['metric']}",
            commands.get("retrieval"),
        ),
        (
            "Detection",
            "mAP@0.5 (area) / VOC07",
            f"{d['map']:.3f} / {d['map_voc07']:.3f}",
            f"{d['images']} test photos, {d['mode']} mode; without box regression {d['map_no_regression']:.3f}",
            commands.get("detection"),
        ),
        (
            "Detection",
            "seconds per image",
            f"{d['seconds_per_image']['total']:.2f}",
            f"proposals {d['seconds_per_image']['proposals']:.2f} s + "
            f"network {d['seconds_per_image']['network']:.2f} s; "
            f"proposal recall@0.5 {d['proposal_recall']['recall']:.2f}",
            commands.get("detection"),
        ),
    ]
    return "".join(
        f"<tr><td>{_e(task)}</td><td>{_e(name)}</td><td class=num><b>{_e(value)}</b></td><td>{_e(note)}</td>"
        f"<td><code>{_e(cmd or '')}</code></td></tr>"
        for task, name, value, note, cmd in rows
    )


def render(result, cfg) -> str:
    """The page for a DemoResult (demo.py) and its DemoConfig: one section after another."""
    m, p = result.metrics, result.pictures
    total = sum(s["seconds"] for s in result.stages)
    stages = "".join(
        f"<tr><td>{_e(s['stage'])}</td><td class=num>{s['seconds']:.1f}</td><td>{_e(s['summary'])}</td></tr>"
        for s in result.stages
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>alexsuite demo report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>alexsuite demo report</h1>
<p class=sub>alexsuite {_e(__version__)} on {_e(platform.node() or "this machine")} ({_e(platform.machine())},
Python {_e(platform.python_version())}), {_e(time.strftime("%Y-%m-%d %H:%M"))}; all stages {total:.0f} s.
Built-in data only: the bundled Fashion-MNIST subset and eight bundled photographs.</p>

<h2>Results</h2>
<table><tr><th>task</th><th>metric</th><th>value</th><th>on what</th><th>the same number alone</th></tr>
{_metric_rows(m, result.commands)}</table>

<h2>Stages</h2>
<table><tr><th>stage</th><th>seconds</th><th>result</th></tr>{stages}</table>
{_training(m["training"], p)}
{_search(m, p)}
{_detection(m, p, cfg)}
<h2>Data</h2>
<p>Fashion-MNIST (Zalando Research, MIT licence): 500 training and 100 test images per class, bundled.
Photographs: scikit-image's sample images, public domain or CC0 (NASA, SpaceX, Stefan van der Walt,
Rachel Michetti, Lav Varshney, CC0Textures); see <code>alexsuite/data/bundled/photos/README.md</code>.</p>
</body></html>
"""


def _training(tr: dict, p: dict) -> str:
    tc = tr["config"]
    return f"""
<h2>Training</h2>
<p>{tr["epochs"]} epochs of <code>{_e(tc["arch"])}</code> (the paper's topology sized for 28 px: five
convolutions, LRN, overlapping pooling, grouped conv2/4/5, dropout {tc["dropout"]:g} on fc6/fc7) with the paper's
recipe: SGD, momentum {tc["momentum"]:g}, weight decay {tc["weight_decay"]:g}, batch {tc["batch_size"]},
lr {tc["lr"]:g} ({_e(_SCHEDULES.get(tc["schedule"], tc["schedule"]))}), random
crops, flips{" and PCA colour jitter" if tc["pca_lighting"] else ""}. Last epoch: training loss
{tr["train_loss"]:.3f}, validation top-1 {tr["val_top1"]:.3f},
{tr["images_per_s"]:.0f} images/s.</p>
{_figure(p["curves"], "Loss and error per epoch (the numbers: train/metrics.csv)")}
{_figure(p["filters"], _FILTERS_CAPTION)}
"""


def _search(m: dict, p: dict) -> str:
    return f"""
<h2>Image search</h2>
<p>fc7 vectors of the {m["index"]["images"]:,} training images in a FAISS index ({_e(m["index"]["factory"])},
{_e(m["index"]["metric"])}), with their paths and classes in SQLite. Each row: a test image (framed)
and its {m["search"]["k"]} nearest training images; {m["search"]["same_class"]:.0%} of them share its class.</p>
{_figure(p["search"], "Queries (red frame) and their nearest images: rank, class, distance")}
"""


def _detection(m: dict, p: dict, cfg) -> str:
    ap_rows = "".join(f"<tr><td>{_e(c)}</td><td class=num>{ap:.3f}</td></tr>" for c, ap in m["detection"]["ap"].items())
    detections = "".join(
        _figure(
            d["src"],
            f"{Path(d['src']).stem}: truth {', '.join(d['truth']) or 'nothing'}; "
            f"found {', '.join(d['found']) or 'nothing'}",
        )
        for d in p.get("detections", [])
    )
    return f"""
<h2>Detection</h2>
<p>R-CNN trained on {m["scenes"]["train"]} scenes (articles pasted on six photographs) and tested on
{m["scenes"]["test"]} scenes ({m["scenes"]["test_objects"]} objects) made from two other photographs and
articles from the test split: selective-search proposals, the backbone fine-tuned on warped proposals,
fc7 features, one linear SVM per class with hard negatives, box regression on pool5, NMS at 0.3.</p>
<table><tr><th>class</th><th>AP@0.5</th></tr>{ap_rows}</table>
<p>The first test scenes, with every box whose probability of being right (its SVM score
Platt-scaled on held-out training images) is above {cfg.picture_threshold:g} after NMS
(<code>alexsuite detect --threshold {cfg.picture_threshold:g}</code>); captions give the truth and what
was found, with probabilities.</p>
<div class=grid>{detections}</div>
"""


def write_report(result, cfg) -> Path:
    path = Path(result.out) / "report.html"
    atomic_write_text(path, render(result, cfg))
    return path

"""Pictures: training curves and conv1 filter grids (more come with retrieval and detection).
Every function writes a PNG to a path or a binary file object."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageOps


def _pyplot():
    """matplotlib on first use only: it costs ~0.5 s to import, and `alexsuite search`
    must start fast when it draws nothing."""
    import matplotlib

    matplotlib.use("Agg")  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: list[dict], out) -> None:
    """Loss (left) and top-1 error (right) per epoch, train and validation."""
    epochs = [r["epoch"] for r in history]
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    validated = [r for r in history if r["val_top1"] is not None]  # --val-every skips some epochs
    val_epochs = [r["epoch"] for r in validated]
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(val_epochs, [r["val_loss"] for r in validated], "o-", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_err.plot(epochs, [1 - r["train_top1"] for r in history], "o-", label="train")
    ax_err.plot(val_epochs, [1 - r["val_top1"] for r in validated], "o-", label="validation top-1")
    ax_err.plot(val_epochs, [1 - r["val_top5"] for r in validated], "s--", label="validation top-5", alpha=0.6)
    ax_err.set(xlabel="epoch", ylabel="error rate", title="Error")
    for ax in (ax_loss, ax_err):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def filter_grid(weight: torch.Tensor, out, scale: int | None = None, pad: int = 1, grayscale: bool = False) -> None:
    """conv1 kernels as RGB tiles, each stretched to its own range (the paper's Figure 3).
    grayscale: the net only ever saw equal R, G and B, so show what a kernel does to a grey
    image, the sum over its input channels (the per-channel differences are untrained noise)."""
    w = weight.detach().float().cpu()
    if grayscale:
        w = w.sum(1, keepdim=True)
    n, c, kh, kw = w.shape
    if c == 1:
        w = w.expand(-1, 3, -1, -1)
    lo = w.amin(dim=(1, 2, 3), keepdim=True)
    hi = w.amax(dim=(1, 2, 3), keepdim=True)
    tiles = ((w - lo) / (hi - lo).clamp_min(1e-8) * 255).byte().permute(0, 2, 3, 1).numpy()
    cols = min(n, 16 if n > 48 else 8)
    rows = math.ceil(n / cols)
    scale = scale or max(1, 64 // kh)
    th, tw = kh * scale, kw * scale
    canvas = np.full((rows * (th + pad) + pad, cols * (tw + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, cols)
        big = tile.repeat(scale, 0).repeat(scale, 1)
        canvas[pad + r * (th + pad) : pad + r * (th + pad) + th, pad + q * (tw + pad) : pad + q * (tw + pad) + tw] = big
    Image.fromarray(canvas).save(out, format="PNG")


def error_curves(
    series: dict[str, list[float]],
    out,
    threshold: float | None = None,
    xlabel: str = "epoch",
    ylabel: str = "training error rate",
    title: str = "",
) -> None:
    """Several error-rate curves on one axis (e.g. the paper's Figure 1, ReLU vs tanh)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for name, values in series.items():
        ax.plot(range(1, len(values) + 1), values, "o-", label=name)
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"{threshold:.0%} error")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)


def thumbnail(path, size: int) -> Image.Image:
    """A size x size tile of an image file or an HxWx3 array (letterboxed on white); a grey
    tile if unreadable."""
    from .data.decode import decode_image

    tile = Image.new("RGB", (size, size), (255, 255, 255))
    try:
        arr = path if isinstance(path, np.ndarray) else decode_image(path, min_side=size)
    except Exception:  # a result sheet still draws when one file has gone bad
        return Image.new("RGB", (size, size), (200, 200, 200))
    img = Image.fromarray(arr)
    small = max(img.size) < size  # tiny images (e.g. 28 px articles) are enlarged with crisp pixels
    img = ImageOps.contain(img, (size, size), Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)
    tile.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return tile


def result_sheet(rows: list[tuple[str, list[tuple[str, str]]]], out, tile: int = 128, first: str = "query") -> None:
    """One row per query: the query image (captioned `first`), then its results, each captioned.
    rows: [(query_path_or_pixels, [(result_path, caption), ...]), ...]."""
    from PIL import ImageDraw

    caption_h, gap = 16, 4
    cols = 1 + max((len(r[1]) for r in rows), default=0)
    width = cols * (tile + gap) + gap + gap * 2
    height = len(rows) * (tile + caption_h + gap) + gap
    sheet = Image.new("RGB", (width, max(height, tile)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (query, results) in enumerate(rows):
        y = gap + r * (tile + caption_h + gap)
        cells = [(query, first)] + list(results)
        for c, (path, caption) in enumerate(cells):
            x = gap + c * (tile + gap) + (gap * 2 if c else 0)  # a wider gap after the query
            sheet.paste(thumbnail(path, tile), (x, y))
            if c == 0:
                draw.rectangle([x - 2, y - 2, x + tile + 1, y + tile + 1], outline=(220, 40, 40), width=2)
            draw.text((x + 2, y + tile + 2), caption[:22], fill=(0, 0, 0))
    sheet.save(out, format="PNG")


def draw_boxes(image: np.ndarray, boxes, out, labels=None, scores=None, width: int = 2) -> None:
    """An RGB uint8 image with boxes ([x1, y1, x2, y2], 0-based, exclusive) drawn on it,
    captioned with label and score when given; one colour per label."""
    from PIL import ImageDraw

    img = Image.fromarray(np.ascontiguousarray(image))
    draw = ImageDraw.Draw(img)
    palette = [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
        (0, 128, 128),
    ]
    names = sorted(set(labels)) if labels is not None else []
    for i, box in enumerate(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)):
        label = labels[i] if labels is not None else None
        colour = palette[names.index(label) % len(palette)] if label is not None else palette[i % len(palette)]
        x1, y1, x2, y2 = (float(v) for v in box)
        draw.rectangle([x1, y1, max(x1, x2 - 1), max(y1, y2 - 1)], outline=colour, width=width)
        caption = " ".join(t for t in (label, f"{scores[i]:.2f}" if scores is not None else None) if t)
        if caption:
            tw = draw.textlength(caption)
            draw.rectangle([x1, max(0, y1 - 12), x1 + tw + 4, max(12, y1)], fill=colour)
            draw.text((x1 + 2, max(0, y1 - 12)), caption, fill=(255, 255, 255))
    img.save(out, format="PNG")


SHEET_ROWS, SHEET_COLUMNS = 50, 20  # a sheet of 1 + 20 tiles by 50 rows: 0.37 gigapixels at most


def search_sheet(results, out, tile: int = 128) -> bool:
    """`alexsuite search --sheet`: one row per QueryResult (retrieval/search.py) that has results,
    each hit captioned with its rank, distance and label; the first SHEET_ROWS queries and
    SHEET_COLUMNS hits of each, so a big search cannot draw a picture too large to hold.
    Returns whether anything was left out."""
    found = [r for r in results if not r.error]
    rows = [
        (
            _query_picture(r),
            [(h.path, f"#{h.rank} d={h.distance:.3g} {h.label or ''}") for h in r.results[:SHEET_COLUMNS]],
        )
        for r in found[:SHEET_ROWS]
    ]
    result_sheet(rows, out, tile)
    return len(found) > SHEET_ROWS or any(len(r.results) > SHEET_COLUMNS for r in found)


def duplicates_sheet(group, out, tile: int = 128) -> bool:
    """`alexsuite dedup --sheet`: one row, the kept image then its first SHEET_COLUMNS copies
    with their cosine distances. Returns whether copies were left out."""
    cells = [(d["path"], "same bytes" if d["exact"] else f"d={d['distance']:.3g}") for d in group.duplicates]
    result_sheet([(group.keep, cells[:SHEET_COLUMNS])], out, tile, first="keep")
    return len(cells) > SHEET_COLUMNS


def draw_detections(image: np.ndarray, detections, classes: list[str], out) -> None:
    """`alexsuite detect --out`: a Detections' boxes on the image, captioned with class and score."""
    draw_boxes(
        image,
        detections.boxes.numpy(),
        out,
        labels=[classes[int(c)] for c in detections.labels],
        scores=detections.scores.tolist(),
    )


def _query_picture(result):
    """A query's file, or its pixels when it was given in memory (the Python API)."""
    source = getattr(result, "source", None)
    return source.pixels if source is not None and source.path is None else result.query


def captioned(image: np.ndarray, lines: list[str], out, width: int = 256) -> None:
    """An image scaled to `width` px with text lines (e.g. top-k labels) under it, as a PNG."""
    from PIL import ImageDraw

    img = Image.fromarray(np.ascontiguousarray(image))
    img = img.resize((width, max(1, round(img.height * width / img.width))), Image.Resampling.LANCZOS)
    line_h = 14
    canvas = Image.new("RGB", (width, img.height + line_h * len(lines) + 6), (255, 255, 255))
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw.text((4, img.height + 3 + i * line_h), line, fill=(0, 0, 0))
    canvas.save(out, format="PNG")


def to_pil(save) -> Image.Image:
    """What `save(file)` draws, as a PIL image in memory (results' .plot() for notebooks)."""
    import io

    buffer = io.BytesIO()
    save(buffer)
    buffer.seek(0)
    with Image.open(buffer) as img:
        return img.convert("RGB")

"""`alexsuite index`."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from alexsuite.devices import resolve_device
from alexsuite.embedding import LAYERS
from alexsuite.retrieval.indexer import IndexOptions, update_index
from alexsuite.retrieval.store import IndexStore, resolve_dir
from alexsuite.training.checkpoint import default_model, load_model
from alexsuite.training.distributed import init_from_env, shutdown

from .main import main
from .progress import Bar


def model_for(store_dir: Path, model: str | None, rebuild: bool = False) -> str:
    """--model, else the model that built this index, else the newest training run."""
    if model:
        return model
    if IndexStore.exists(store_dir) and not rebuild:
        return json.loads((store_dir / "manifest.json").read_text())["model"]["source"]
    return str(default_model())


@main.command(name="index")
@click.argument("images", type=click.Path(file_okay=False))
@click.option("--model", default=None, help="Run directory or checkpoint from `alexsuite train`, or torchvision "
              "AlexNet weights. Default: the model that built the index, else the newest runs/train/ run.")
@click.option("--index", "index_name", default="default", show_default=True,
              help="A name (kept under indexes/) or a path containing a / to an index directory.")
@click.option("--layer", type=click.Choice(LAYERS), default=None,
              help="Which activations describe an image: fc7 (default; the paper's Section 6.1), fc6, pool5.")
@click.option("--factory", default=None,
              help="FAISS index_factory string: Flat (default, exact), HNSW32, IVF1024,PQ64, ITQ256,LSHt "
              "(binary codes)...; training is done for you.")
@click.option("--metric", type=click.Choice(["l2", "cosine"]), default=None,
              help="l2 (default): Euclidean distance as the paper; cosine: the angle between vectors.")
@click.option("--pca", type=click.IntRange(min=1), default=None, help="Reduce vectors to N dimensions with PCA first.")
@click.option("--whiten/--no-whiten", default=None, help="With --pca: whiten the components (default: whiten).")
@click.option("--prune", is_flag=True, help="Remove indexed images under IMAGES whose files are gone.")
@click.option("--rebuild", is_flag=True, help="Delete the index and build it again (needed to change its settings).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda[:N] (also FAISS GPU training).")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Decoding processes.")
@click.option("--strict", is_flag=True, help="Stop at the first unreadable image instead of skipping it.")
@click.option("--wait", type=click.FloatRange(min=0), default=0, help="Seconds to wait for another writer of this index.")
@click.option("--commit-every", type=click.FloatRange(min=0), default=60, show_default=True,
              help="Seconds between commits; an interrupted run loses at most this much work.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts.")
def index_cmd(images, model, index_name, layer, factory, metric, pca, whiten, prune, rebuild, device,
              batch_size, workers, strict, wait, commit_every, as_json):
    """Embed every image under IMAGES (recursively) and add it to a FAISS index.

    Running it again embeds only new or changed files; ids stay stable. Settings left
    out (--layer, --factory, --metric, --pca) keep what the index was built with. Writes the index
    directory, which holds index.faiss, meta.sqlite (id, path, size, mtime, sha256, class label
    = first folder under IMAGES) and manifest.json (model fingerprint, layer,
    preprocessing, factory); it refuses vectors from any other model. Work is committed
    every minute, so an interrupted run resumes.

    \b
    Examples:
      alexsuite index photos/                                  # indexes/default, fc7, exact L2
      alexsuite index photos/ --index shop --factory HNSW32 --metric cosine
      alexsuite index photos/ --index big --factory IVF1024,PQ64 --pca 256
      torchrun --nproc-per-node 4 -m alexsuite.cli index photos/ --device cuda
    """
    store_dir = resolve_dir(index_name)
    dev = resolve_device(device)
    ctx, dev = init_from_env(dev)
    try:
        loaded = load_model(model_for(store_dir, model, rebuild), dev)
        opts = IndexOptions(layer, factory, metric, pca, whiten, batch_size, workers, prune, rebuild, strict, wait,
                            commit_every)
        quiet = as_json or not ctx.is_main
        if not quiet:
            click.echo(f"indexing {images} into {store_dir} with {loaded.source} ({loaded.arch})", err=True)
        report = update_index(store_dir, loaded, Path(images), opts, dev, ctx=ctx,
                              progress=lambda total: Bar(total, "embed", enabled=not quiet),
                              warn=lambda m: click.secho(f"warning: {m}", fg="yellow", err=True))
    finally:
        shutdown()
    if not ctx.is_main:
        return
    if as_json:
        click.echo(json.dumps(asdict(report)))
        return
    if report.failed:
        click.secho(f"warning: skipped {report.failed} unreadable image(s), e.g. {report.failed_examples[0]}",
                    fg="yellow", err=True)
    if report.missing:
        click.secho(f"warning: {report.missing} indexed image(s) under {images} are gone; --prune removes them",
                    fg="yellow", err=True)
    speed = f", {report.images_per_s:.0f} img/s" if report.added + report.updated else ""
    click.echo(f"{store_dir}: {report.total:,} images ({report.added:,} added, {report.updated:,} updated, "
               f"{report.unchanged + report.touched:,} unchanged, {report.removed:,} removed) "
               f"in {report.seconds:.1f}s{speed}")

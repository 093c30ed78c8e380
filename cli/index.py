"""`alexsuite index`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click

from alexsuite.devices import resolve_device
from alexsuite.distributed import init_from_env, shutdown
from alexsuite.embedding import LAYERS
from alexsuite.errors import ConfigError
from alexsuite.models.checkpoint import default_model, load_model
from alexsuite.retrieval.index import METRICS
from alexsuite.retrieval.indexer import IndexOptions, update_index
from alexsuite.retrieval.store import IndexStore, resolve_dir

from .main import main
from .options import option
from .progress import Bar


def model_for(store_dir: Path, model: str | None) -> str:
    """--model, else the model that built this index (a --rebuild too: the same vectors made
    again), else the newest training run."""
    if model:
        return model
    if not IndexStore.exists(store_dir) and any((store_dir / n).exists() for n in ("meta.sqlite", "index.faiss")):
        raise ConfigError(
            f"--index {store_dir}: its manifest is gone, and with it the model's name: rebuild it with "
            "--rebuild, and pass --model"
        )
    if IndexStore.exists(store_dir):
        return IndexStore.manifest_of(store_dir)["model"]["source"]
    return str(default_model())


@main.command(name="index")
@click.argument("images", type=click.Path(file_okay=False))
@option(IndexOptions, "model")
@option(IndexOptions, "index", "--index", "index_name")
@option(IndexOptions, "layer", type=click.Choice(LAYERS))
@option(IndexOptions, "factory")
@option(IndexOptions, "metric", type=click.Choice(METRICS))
@option(IndexOptions, "pca", type=click.IntRange(min=1))
@option(IndexOptions, "whiten", "--whiten/--no-whiten")
@option(IndexOptions, "prune")
@option(IndexOptions, "rebuild")
@option(IndexOptions, "device")
@option(IndexOptions, "batch_size", type=click.IntRange(min=1))
@option(IndexOptions, "workers", type=click.IntRange(min=0))
@option(IndexOptions, "strict")
@option(IndexOptions, "wait", type=click.FloatRange(min=0))
@option(IndexOptions, "commit_seconds", "--commit-every", type=click.FloatRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts.")
def index_cmd(images, index_name, as_json, **settings):
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
    opts = IndexOptions(index=index_name, **settings)
    store_dir = resolve_dir(opts.index)
    ctx, dev = init_from_env(resolve_device(opts.device))
    try:
        loaded = load_model(model_for(store_dir, opts.model), dev)
        quiet = as_json or not ctx.is_main
        if not quiet:
            click.echo(f"indexing {images} into {store_dir} with {loaded.source} ({loaded.arch})", err=True)
        report = update_index(
            store_dir,
            loaded,
            Path(images),
            opts,
            dev,
            ctx=ctx,
            progress=lambda total: Bar(total, "embed", enabled=not quiet),
            warn=lambda m: click.secho(f"warning: {m}", fg="yellow", err=True),
        )
    finally:
        shutdown()
    if not ctx.is_main:
        return
    if report.failed:  # warnings go to stderr, so --json's stdout stays one object
        click.secho(
            f"warning: skipped {report.failed} unreadable image(s), e.g. {report.failed_examples[0]}",
            fg="yellow",
            err=True,
        )
    if report.missing:
        click.secho(
            f"warning: {report.missing} indexed image(s) under {images} are gone; --prune removes them",
            fg="yellow",
            err=True,
        )
    if as_json:
        click.echo(json.dumps(asdict(report)))
        return
    speed = f", {report.images_per_s:.0f} img/s" if report.added + report.updated else ""
    click.echo(
        f"{store_dir}: {report.total:,} images ({report.added:,} added, {report.updated:,} updated, "
        f"{report.unchanged + report.touched:,} unchanged, {report.removed:,} removed) "
        f"in {report.seconds:.1f}s{speed}"
    )

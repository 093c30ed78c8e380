"""`alexsuite index`."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from alexsuite.api.index import add_to_index, index_model
from alexsuite.devices import resolve_device
from alexsuite.distributed import init_from_env, shutdown
from alexsuite.embedding import IMAGE_LAYERS
from alexsuite.models.checkpoint import load_model
from alexsuite.retrieval.backend import locate
from alexsuite.retrieval.index import METRICS
from alexsuite.retrieval.indexer import IndexOptions

from .main import main
from .options import option
from .progress import Bar


@main.command(name="index")
@click.argument("images", nargs=-1, type=click.Path(file_okay=False))
@click.option(
    "--files-from",
    type=click.File("r", encoding="utf-8", errors="surrogateescape"),
    default=None,
    help="Also index the image files listed in this file, one path a line ('-': standard input).",
)
@option(IndexOptions, "model")
@option(IndexOptions, "index", "--index", "index_name")
@option(IndexOptions, "layer", type=click.Choice(IMAGE_LAYERS))
@option(IndexOptions, "factory")
@option(IndexOptions, "metric", type=click.Choice(METRICS))
@option(IndexOptions, "pca", type=click.IntRange(min=1))
@option(IndexOptions, "whiten", "--whiten/--no-whiten")
@option(IndexOptions, "on_disk", "--on-disk/--in-memory")
@option(IndexOptions, "dba")
@option(IndexOptions, "prune")
@option(IndexOptions, "rebuild")
@option(IndexOptions, "device")
@option(IndexOptions, "batch_size", type=click.IntRange(min=1))
@option(IndexOptions, "workers", type=click.IntRange(min=0))
@option(IndexOptions, "strict")
@option(IndexOptions, "wait", type=click.FloatRange(min=0))
@option(IndexOptions, "commit_seconds", "--commit-every", type=click.FloatRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts per folder (and list).")
def index_cmd(images, files_from, index_name, as_json, **settings):
    """Embed every image under each IMAGES folder (recursively), and each file --files-from
    lists, into a FAISS index (or a Milvus collection: --index milvus://HOST:PORT/COLLECTION,
    milvus-lite:PATH.db/COLLECTION).

    Running it again embeds only new or changed files; ids stay stable. Settings left
    out (--layer, --factory, --metric, --pca, --dba) keep what the index was built with.
    Writes the index directory, which holds index.faiss, meta.sqlite (id, path, size, mtime,
    sha256, class label = first folder under IMAGES) and manifest.json (model fingerprint,
    layer, preprocessing, factory, dba), with --dba raw.faiss (the embedded vectors) and with
    --on-disk lists-*.ivfdata (the inverted lists, memory-mapped); a Milvus collection holds
    the same rows with their vectors. It refuses vectors from any other model. Work is
    committed every minute, so an interrupted run resumes.

    \b
    Examples:
      alexsuite index photos/                                  # indexes/default, fc7, exact L2
      alexsuite index shop/ archive/ --index shop              # several folders, one index
      find photos -name '*.jpg' -newer last.txt | alexsuite index --files-from -
      alexsuite index photos/ --index shop --factory HNSW32 --metric cosine
      alexsuite index photos/ --index big --factory IVF1024,PQ64 --pca 256
      alexsuite index photos/ --index dba --metric cosine --dba n=5,alpha=3   # augmented vectors
      alexsuite index photos/ --index big --factory IVF4096,Flat --on-disk    # lists memory-mapped
      alexsuite index photos/ --index milvus-lite:runs/m.db/shop --factory HNSW32   # embedded Milvus
      alexsuite index photos/ --index milvus://milvus.example.com:19530/shop        # a Milvus server
      torchrun --nproc-per-node 4 -m alexsuite.cli index photos/ --device cuda
    """
    opts = IndexOptions(index=index_name, **settings)
    listed = [line.rstrip("\r\n") for line in files_from if line.strip()] if files_from else []
    if not images and not listed:
        raise click.UsageError("give IMAGES folders, or --files-from LIST")
    store_dir = locate(opts.index)
    ctx, dev = init_from_env(resolve_device(opts.device))
    try:
        loaded = load_model(index_model(store_dir, opts.model), dev)
        quiet = as_json or not ctx.is_main
        if not quiet:
            what = ", ".join(images) + (f" and {len(listed):,} listed file(s)" if listed else "")
            click.echo(f"indexing {what} into {store_dir} with {loaded.source} ({loaded.arch})", err=True)
        reports = add_to_index(
            store_dir,
            loaded,
            images,
            listed,
            opts,
            dev,
            progress=lambda total: Bar(total, "embed", enabled=not quiet),
            warn=lambda m: click.secho(f"warning: {m}", fg="yellow", err=True),
            ctx=ctx,
        )
    finally:
        shutdown()
    if ctx.is_main:
        for where, report in zip([*images, "the listed files"], reports):
            _print_report(where, report, store_dir, as_json)


def _print_report(images: str, report, store_dir, as_json: bool) -> None:
    if report.failed:  # warnings go to stderr, so --json's stdout stays one object a line
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
    augmented = f", {report.augmented:,} neighbours' --dba vectors redone" if report.augmented else ""
    click.echo(
        f"{store_dir}: {report.total:,} images ({report.added:,} added, {report.updated:,} updated, "
        f"{report.unchanged + report.touched:,} unchanged, {report.removed:,} removed{augmented}) "
        f"in {report.seconds:.1f}s{speed}"
    )

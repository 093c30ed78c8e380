"""`alexsuite eval-retrieval`."""

from __future__ import annotations

import json

import click

from alexsuite.devices import resolve_device
from alexsuite.embedding import IMAGE_LAYERS
from alexsuite.models.checkpoint import default_model, load_model
from alexsuite.retrieval.evaluate import RetrievalEvalSettings, evaluate_model_retrieval
from alexsuite.retrieval.index import METRICS
from alexsuite.settings import default_of

from .main import main
from .options import option
from .progress import Bar


@main.command(name="eval-retrieval")
@click.argument("data", required=False, default=default_of(RetrievalEvalSettings, "data"))
@option(RetrievalEvalSettings, "model")
@option(RetrievalEvalSettings, "layer", type=click.Choice(IMAGE_LAYERS))
@option(RetrievalEvalSettings, "factory")
@option(RetrievalEvalSettings, "metric", type=click.Choice(METRICS))
@option(RetrievalEvalSettings, "pca", type=click.IntRange(min=1))
@option(RetrievalEvalSettings, "whiten", "--whiten/--no-whiten")
@option(RetrievalEvalSettings, "params")
@option(RetrievalEvalSettings, "ks", "-k", type=click.IntRange(min=1), multiple=True)
@option(RetrievalEvalSettings, "rerank")
@option(RetrievalEvalSettings, "dba")
@option(RetrievalEvalSettings, "index")
@option(RetrievalEvalSettings, "device")
@option(RetrievalEvalSettings, "batch_size", type=click.IntRange(min=1))
@option(RetrievalEvalSettings, "workers", type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_retrieval_cmd(data, as_json, **settings):
    """Retrieval quality of a model's features: mAP and precision@k, with the test
    (or val/) images as queries and the training images as the database. An image is
    relevant to a query when it has the same class.

    \b
    Examples:
      alexsuite eval-retrieval --model runs/demo/train/last.pt --metric cosine   # as the demo
      alexsuite eval-retrieval                                   # bundled Fashion-MNIST subset
      alexsuite eval-retrieval fashion-mnist --model runs/train/exp --metric cosine --json
      alexsuite eval-retrieval photos/ --factory ITQ256,LSHt     # photos/train + photos/val
      alexsuite eval-retrieval --metric cosine --dba n=5 --rerank aqe:n=5,alpha=3   # re-ranking
      alexsuite eval-retrieval --factory HNSW32 --index milvus-lite:runs/eval.db/fm   # in Milvus Lite

    Prints mAP, precision@k and queries per second (or one JSON object); builds its index in
    memory and writes nothing, or with --index replaces that Milvus collection.
    """
    opts = RetrievalEvalSettings(data=data, **settings)
    dev = resolve_device(opts.device)
    loaded = load_model(opts.model or default_model(), dev)
    result = evaluate_model_retrieval(
        loaded,
        opts,
        dev,
        progress=lambda total, name: Bar(total, name, enabled=not as_json),
        warn=lambda m: click.secho(f"warning: {m}", fg="yellow", err=True),
    )
    for advice in result["warnings"]:
        click.secho(f"warning: {advice}", fg="yellow", err=True)
    if as_json:
        click.echo(json.dumps(result))
        return
    precisions = "  ".join(f"P@{k} {result[f'precision@{k}']:.4f}" for k in sorted(set(opts.ks)))
    rerank = "".join(f", {name} {result[name]}" for name in ("dba", "rerank") if result[name] != "none")
    click.echo(
        f"{data}: mAP {result['mAP']:.4f}  {precisions}  {result['queries_per_second']:,.0f} queries/s  "
        f"({result['queries']:,} queries, {result['database']:,} database images, {opts.layer}, "
        f"{result['factory']}, {opts.metric}{rerank})"
    )

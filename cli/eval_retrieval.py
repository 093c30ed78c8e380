"""`alexsuite eval-retrieval`."""
from __future__ import annotations

import json

import click

from alexsuite.data.datasets import DEFAULT_DATASET
from alexsuite.devices import resolve_device
from alexsuite.embedding import LAYERS
from alexsuite.evaluation.retrieval import evaluate_model_retrieval
from alexsuite.training.checkpoint import default_model, load_model

from .main import main
from .progress import Bar


@main.command(name="eval-retrieval")
@click.argument("data", required=False, default=DEFAULT_DATASET)
@click.option("--model", default=None, help="Run directory or checkpoint (default: the newest runs/train/ run).")
@click.option("--layer", type=click.Choice(LAYERS), default="fc7", show_default=True)
@click.option("--factory", default="Flat", show_default=True, help="FAISS index_factory string to evaluate.")
@click.option("--metric", type=click.Choice(["l2", "cosine"]), default="l2", show_default=True)
@click.option("--pca", type=click.IntRange(min=1), default=None, help="PCA to N dimensions first.")
@click.option("--whiten/--no-whiten", default=True, show_default=True)
@click.option("--params", default=None, help="FAISS search parameters, e.g. nprobe=32.")
@click.option("-k", "ks", type=click.IntRange(min=1), multiple=True, default=(1, 10, 100), show_default=True,
              help="Report precision@k (repeatable).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_retrieval_cmd(data, model, layer, factory, metric, pca, whiten, params, ks, device, batch_size, workers, as_json):
    """Retrieval quality of a model's features: mAP and precision@k, with the test
    (or val/) images as queries and the training images as the database. An image is
    relevant to a query when it has the same class.

    \b
    Examples:
      alexsuite eval-retrieval --model runs/demo/train/last.pt --metric cosine   # as the demo
      alexsuite eval-retrieval                                   # bundled Fashion-MNIST subset
      alexsuite eval-retrieval fashion-mnist --model runs/train/exp --metric cosine --json
      alexsuite eval-retrieval photos/ --factory ITQ256,LSHt     # photos/train + photos/val

    Prints mAP and precision@k (or one JSON object); builds its index in memory, writes nothing.
    """
    dev = resolve_device(device)
    loaded = load_model(model or default_model(), dev)
    result = evaluate_model_retrieval(
        loaded, data, {"factory": factory, "metric": metric, "pca": pca, "whiten": whiten}, layer, ks, params,
        dev, batch_size, workers, progress=lambda total, name: Bar(total, name, enabled=not as_json),
        warn=lambda m: click.secho(f"warning: {m}", fg="yellow", err=True))
    for advice in result["warnings"]:
        click.secho(f"warning: {advice}", fg="yellow", err=True)
    if as_json:
        click.echo(json.dumps(result))
        return
    precisions = "  ".join(f"P@{k} {result[f'precision@{k}']:.4f}" for k in sorted(set(ks)))
    click.echo(f"{data}: mAP {result['mAP']:.4f}  {precisions}  ({result['queries']:,} queries, "
               f"{result['database']:,} database images, {layer}, {result['factory']}, {metric})")

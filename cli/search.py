"""`alexsuite search`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alexsuite.api import Index
from alexsuite.data.inputs import expand_paths
from alexsuite.fileio import display_path
from alexsuite.retrieval.search import SearchSettings

from .main import main
from .options import option
from .outputs import output_folder, warn


@main.command(name="search")
@click.argument("queries", nargs=-1)
@option(SearchSettings, "k", "-k", type=click.IntRange(min=1))
@option(SearchSettings, "index", "--index", "index_name")
@click.option(
    "--id", "ids", type=int, multiple=True, help="Search with an already indexed image, by its id (repeatable)."
)
@option(SearchSettings, "model")
@option(SearchSettings, "params")
@option(SearchSettings, "rerank")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='JSON Lines: {"query", "results": [{"rank", "path", "distance", "id"}]} per query.',
)
@click.option(
    "--sheet", type=click.Path(dir_okay=False), default=None, help="Also draw queries and results into this PNG."
)
@option(SearchSettings, "device")
@option(SearchSettings, "workers", type=click.IntRange(min=0))
def search_cmd(queries, index_name, ids, as_json, sheet, **settings):
    """Find the K indexed images nearest to each QUERY (image files, folders of them, or
    quoted globs).

    Distances are Euclidean between feature vectors (or 1 - cosine similarity for
    --metric cosine indexes). A query that is itself in the index is left out of its
    own results. Many queries in one call share the start-up cost. With --rerank aqe the
    distances are those of the expanded query.

    \b
    Examples:
      alexsuite search runs/demo/images/test/bag/bag_0000.png --index runs/demo/index
      alexsuite search query.jpg                          # table of the 10 nearest
      alexsuite search queries/ -k 5 --sheet sheet.png    # picture grid with distances
      alexsuite search --id 42 --json                     # JSON Lines, one object per query
      alexsuite search query.jpg --rerank aqe:n=5,alpha=3 # query expansion: search twice
      alexsuite search query.jpg --index milvus-lite:runs/m.db/shop   # a Milvus collection

    Prints a table per query (or JSON Lines); writes only the --sheet picture.
    """
    if not queries and not ids:
        raise click.UsageError("give at least one QUERY image or folder, or --id N")
    opts = SearchSettings(index=index_name, **settings)
    with Index(opts.index, opts.model, opts.device) as index:
        results = index.search(expand_paths(queries, warn=warn), opts, ids=ids, skip_unreadable=True)
    failed = [r for r in results if r.error]
    for r in failed:
        click.secho(f"warning: {r.error}", fg="yellow", err=True)
    if as_json:
        for r in results:
            click.echo(json.dumps(r.to_dict()))
    else:
        for r in results:
            if not r.error:
                _print_table(r)
    if sheet:
        from alexsuite import viz

        output_folder(Path(sheet).parent, "--sheet")
        if viz.search_sheet(results, sheet):
            click.secho(
                f"warning: the sheet shows the first {viz.SHEET_ROWS} queries and {viz.SHEET_COLUMNS} "
                "results of each; --json lists them all",
                fg="yellow",
                err=True,
            )
        click.echo(f"sheet: {sheet}", err=True)
    if failed and len(failed) == len(results):
        raise SystemExit(2)


def _print_table(result) -> None:
    click.echo(display_path(result.query))
    click.echo(f"  {'rank':>4}  {'distance':>9}  {'id':>7}  path")
    for h in result.results:
        label = f"  [{h.label}]" if h.label else ""
        click.echo(f"  {h.rank:>4}  {h.distance:>9.4f}  {h.id:>7}  {_short(h.path)}{label}")


def _short(path: str) -> str:
    try:
        return display_path(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return display_path(path)

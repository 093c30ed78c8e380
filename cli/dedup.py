"""`alexsuite dedup`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alexsuite.api.index import duplicates_in
from alexsuite.embedding import IMAGE_LAYERS
from alexsuite.fileio import atomic_write_text, display_path
from alexsuite.retrieval.dedup import DedupSettings

from .main import main
from .options import option
from .outputs import output_folder, warn
from .progress import Bar


@main.command(name="dedup")
@click.argument("images", nargs=-1)
@option(DedupSettings, "index", "--index", "index_name")
@option(DedupSettings, "threshold", type=click.FloatRange(min=0, max=2))
@option(DedupSettings, "neighbours", type=click.IntRange(min=1))
@option(DedupSettings, "layer", type=click.Choice(IMAGE_LAYERS))
@option(DedupSettings, "model")
@option(DedupSettings, "device")
@option(DedupSettings, "workers", type=click.IntRange(min=0))
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='JSON Lines, one group a line: {"keep": PATH, "duplicates": [{"path", "distance", "exact"}]}.',
)
@click.option(
    "--sheet",
    type=click.Path(file_okay=False),
    default=None,
    help="Also draw each group as a picture, DIR/group-0001.png and on.",
)
@click.option(
    "--list-to-remove",
    "remove_list",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the duplicates' paths (not the kept images), one a line, for you to review and delete.",
)
def dedup_cmd(images, index_name, as_json, sheet, remove_list, **settings):
    """Find copies and near-copies among IMAGES (folders, files, quoted globs), or among the
    images of an index (--index): byte-identical files by their SHA-256, near ones (rescaled,
    re-compressed, cropped, recoloured, mirrored, captioned) by the cosine distance of their
    feature vectors.

    Each group keeps its largest file and lists the others, nearest first; every copy is within
    --threshold of the image kept (no chains of look-alikes). IMAGES are embedded into a
    temporary index that is deleted afterwards; an index is read, never changed. Nothing is
    ever deleted: --list-to-remove writes the paths for you to review.

    \b
    Examples:
      alexsuite dedup runs/demo/scenes/JPEGImages            # scenes made from the same photo
      alexsuite dedup photos/ --list-to-remove copies.txt    # then review copies.txt
      alexsuite dedup photos/ --sheet groups/ --json > groups.jsonl
      alexsuite dedup --index runs/demo/index --threshold 0.01
      alexsuite dedup photos/ --threshold 0                  # byte-identical copies only

    Prints a table of groups (or JSON Lines); writes only the --sheet pictures and the
    --list-to-remove file.
    """
    if bool(images) == bool(index_name):
        raise click.UsageError("give IMAGES folders or files, or --index NAME (not both)")
    opts = DedupSettings(index=index_name, **settings)
    quiet = as_json
    groups = duplicates_in(images, opts, progress=lambda total: Bar(total, "embed", enabled=not quiet), warn=warn)
    if as_json:
        for g in groups:
            click.echo(json.dumps(g.to_dict()))
    else:
        _print_table(groups)
    if sheet:
        _draw(groups, output_folder(sheet, "--sheet"))
    if remove_list:
        output_folder(Path(remove_list).parent, "--list-to-remove")
        atomic_write_text(Path(remove_list), "".join(f"{d['path']}\n" for g in groups for d in g.duplicates))
        click.echo(f"list to remove: {remove_list}", err=True)


def _print_table(groups) -> None:
    copies = sum(len(g.duplicates) for g in groups)
    click.echo(f"{len(groups):,} group(s), {copies:,} duplicate(s)")
    for g in groups:
        click.echo(f"keep  {display_path(g.keep)}")
        for d in g.duplicates:
            how = "same bytes" if d["exact"] else f"{d['distance']:.4f}"
            click.echo(f"  {how:>10}  {display_path(d['path'])}")


def _draw(groups, folder: Path) -> None:
    cut = sum(g.save(folder / f"group-{n:04d}.png") for n, g in enumerate(groups, 1))
    if cut:
        warn(f"{cut} sheet(s) show only the first copies of a large group; --json lists them all")
    click.echo(f"sheets: {display_path(folder)} ({len(groups)} picture(s))", err=True)

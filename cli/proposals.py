"""`alexsuite proposals`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from alexsuite.fileio import display_path, output_names
from alexsuite.proposals import MODES as PROPOSAL_MODES
from alexsuite.proposals import ProposalSettings, ProposeSettings, propose

from .main import main
from .options import option
from .outputs import output_folder
from .progress import Bar


@main.command(name="proposals")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@option(ProposalSettings, "mode", type=click.Choice(PROPOSAL_MODES))
@option(ProposalSettings, "max_boxes", type=click.IntRange(min=1))
@option(ProposeSettings, "cache", type=click.Path(file_okay=False))
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Draw the first --draw boxes of each image into OUT/<name>.png.",
)
@option(ProposeSettings, "draw", type=click.IntRange(min=1))
@option(ProposeSettings, "workers", type=click.IntRange(min=0))
@click.option(
    "--json", "as_json", is_flag=True, help='JSON Lines: {"image", "boxes": [[x1, y1, x2, y2], ...]} per image.'
)
def proposals_cmd(images, mode, max_boxes, cache, out, draw, workers, as_json):
    """Selective-search region proposals for each IMAGE, as R-CNN computes them: the image
    resized to 500 px, OpenCV's selective search, boxes back in the image's 0-based pixel
    corners [x1, y1, x2, y2) ranked as selective search ranks them.

    \b
    Examples:
      alexsuite proposals photo.jpg                        # how many boxes, how long
      alexsuite proposals runs/demo/scenes/JPEGImages/test_0000.jpg --out runs/proposals
      alexsuite proposals photos/*.jpg --out runs/proposals --json > boxes.jsonl

    Prints a count per image (or JSON Lines with every box); with --out, writes each image with
    its first --draw boxes drawn; with --cache, keeps the boxes by image content.
    """
    settings = ProposalSettings(mode=mode, max_boxes=max_boxes)
    bar = Bar(len(images), "proposals", enabled=not as_json)
    results = propose(images, settings, cache_dir=cache, workers=workers, on_image=bar)
    bar.close()
    failed = 0
    pictures = output_names(images) if out else {}
    if out:
        output_folder(out, "--out")
    for path, boxes in zip(images, results):
        if isinstance(boxes, Exception):
            failed += 1
            click.secho(f"warning: {boxes}", fg="yellow", err=True)
            continue
        if as_json:
            click.echo(json.dumps({"image": path, "boxes": boxes.astype(int).tolist()}))
        else:
            click.echo(f"{display_path(path)}: {len(boxes):,} boxes")
        if out:
            from alexsuite import viz
            from alexsuite.data.decode import decode_image

            viz.draw_boxes(decode_image(path), boxes[:draw], Path(out) / pictures[path])
    if out:
        click.echo(f"pictures: {out}", err=True)
    if failed == len(images):
        raise SystemExit(2)

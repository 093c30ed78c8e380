"""`alexsuite`: the command group. User-caused errors become one line and exit code 2."""
from __future__ import annotations

import sys

import click

from alexsuite import __version__
from alexsuite.errors import AlexsuiteError


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AlexsuiteError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho("interrupted (a training run continues with --resume RUN_DIR)", fg="yellow", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="alexsuite")
def main():
    """AlexNet for your own images: train a backbone, search images by their fc7
    features, detect objects with R-CNN.

    \b
    Start here (runs offline on the bundled Fashion-MNIST subset):
      alexsuite train --epochs 3            # writes runs/train/exp/
      alexsuite eval runs/train/exp         # top-1 / top-5 on the test split
      alexsuite eval-retrieval              # how well its fc7 features find same-class images

    Then on your own photos:
      alexsuite index photos/               # fc7 vectors -> indexes/default (FAISS + SQLite)
      alexsuite search query.jpg            # the 10 nearest indexed images

    And R-CNN detection (Pascal VOC or COCO annotations):
      alexsuite train-detector data/VOC --backbone runs/train/exp
      alexsuite detect photo.jpg --out runs/boxes

    Every command has --help with a real example.
    """


def _register():
    # each module adds its command to `main`
    from . import (detect, eval_detector, eval_retrieval, evaluate, index, proposals, search,  # noqa: F401
                   train, train_detector)


_register()

if __name__ == "__main__":
    main()

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
            click.secho("interrupted: `alexsuite train --resume RUN_DIR` continues a training run; demo, index "
                        "and train-detector carry on when run again", fg="yellow", err=True)
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="alexsuite")
def main():
    """AlexNet for your own images: train a backbone with the paper's recipe, search images
    by their fc7 features (FAISS + SQLite), detect objects with R-CNN.

    \b
    Start here: the whole suite on built-in data, offline, about 6 minutes on a CPU:
      alexsuite demo                        # writes runs/demo/report.html

    \b
    Then each step on its own (a dataset name, or your own folders):
      alexsuite train --epochs 3            # bundled Fashion-MNIST subset -> runs/train/exp/
      alexsuite eval runs/train/exp         # top-1 / top-5 on the test split
      alexsuite index photos/               # fc7 vectors -> indexes/default
      alexsuite search query.jpg            # the 10 nearest indexed images
      alexsuite eval-retrieval              # mAP / precision@k of a model's features

    \b
    R-CNN detection (Pascal VOC directory or COCO JSON):
      alexsuite train-detector data/VOC --backbone runs/train/exp
      alexsuite detect photo.jpg --out runs/boxes
      alexsuite eval-detector data/VOC --split val

    Errors you can fix print one line saying how, and exit with status 2.
    Every command has --help with a real example.
    """


def _register():
    # each module adds its command to `main`
    from . import (demo, detect, eval_detector, eval_retrieval, evaluate, index, proposals,  # noqa: F401
                   search, train, train_detector)


_register()

if __name__ == "__main__":
    main()

"""`alexsuite`: the command group. User-caused errors become one line and exit code 2."""

from __future__ import annotations

import importlib
import os
import sys

import click

from alexsuite.errors import AlexsuiteError
from alexsuite.version import __version__

# Each command's module, and the one line `alexsuite --help` shows for it. A module (and torch
# with it, about 2.5 s) loads only when its command runs or shows its own --help, so the
# top-level help and --version answer at once. tests/cli/test_cli.py checks that this table and
# the commands the modules register are the same.
COMMANDS = {
    "demo": ("demo", "The whole suite on built-in data, offline; writes a report."),
    "train": ("train", "Train an AlexNet with the paper's recipe."),
    "eval": ("evaluate", "Top-1 / top-5 accuracy of a trained model."),
    "classify": ("classify", "The top labels of each image, with their probabilities."),
    "index": ("index", "Embed images into a FAISS index (fc7 by default)."),
    "search": ("search", "The indexed images nearest to each query."),
    "dedup": ("dedup", "Groups of copies and near-copies among images or in an index."),
    "eval-retrieval": ("eval_retrieval", "Retrieval mAP and precision@k of a model's features."),
    "proposals": ("proposals", "Selective-search region proposals for images."),
    "scenes": ("scenes", "Write a small Pascal VOC detection set from the bundled data."),
    "train-detector": ("train_detector", "Train an R-CNN detector on Pascal VOC or COCO data."),
    "detect": ("detect", "Detect objects in images with an R-CNN detector."),
    "eval-detector": ("eval_detector", "Per-class AP and mAP of a detector."),
    "serve": ("serve", "Search and detection over HTTP, with a web page."),
    "export": ("export", "Export a trained model to ONNX or TorchScript."),
}


class Group(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name in COMMANDS and name not in self.commands:
            importlib.import_module(f".{COMMANDS[name][0]}", __package__)  # its decorator adds it to `main`
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])

    def invoke(self, ctx):
        if os.environ.get("NO_COLOR"):  # https://no-color.org: any non-empty value turns colour off
            ctx.color = False  # every command's context inherits it
        try:
            return super().invoke(ctx)
        except AlexsuiteError as e:
            click.secho(f"error: {e}", fg="red", err=True, color=ctx.color)
            sys.exit(2)
        except KeyboardInterrupt:
            click.secho(
                "interrupted: `alexsuite train --resume RUN_DIR` continues a training run; demo, index "
                "and train-detector carry on when run again",
                fg="yellow",
                err=True,
                color=ctx.color,
            )
            sys.exit(130)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="alexsuite")
def main():
    """AlexNet for your own images: train a backbone with the paper's recipe, search images
    by their fc7 features (FAISS + SQLite), detect objects with R-CNN.

    \b
    Start here: the whole suite on built-in data, offline, 6-10 minutes on a 2-core CPU:
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
      alexsuite scenes runs/scenes          # a small VOC set from the bundled data
      alexsuite train-detector runs/scenes --backbone runs/train/exp --lr 0.04
      alexsuite detect photo.jpg --out runs/boxes
      alexsuite eval-detector runs/scenes --split test

    Errors you can fix print one line saying how, and exit with status 2. NO_COLOR=1 turns
    colour off.
    Every command has --help with a real example.
    """


if __name__ == "__main__":
    main()

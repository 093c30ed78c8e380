"""tqdm progress bars and one-line epoch summaries on stderr (stdout stays clean for --json)."""

from __future__ import annotations

import click
from tqdm import tqdm

from alexsuite.reporting import Reporter


class Bar:
    def __init__(self, total: int, desc: str, enabled: bool = True):
        self._bar = tqdm(
            total=total,
            desc=desc,
            unit="img",
            unit_scale=True,
            leave=False,
            dynamic_ncols=True,
            disable=None if enabled else True,
        )  # None: off when not a TTY

    def __call__(self, n: int, loss: float | None = None) -> None:
        self._bar.update(n)
        if loss is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ConsoleReporter(Reporter):
    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def _say(self, text: str) -> None:
        if not self.quiet:
            click.echo(text, err=True)

    def start(self, info: dict) -> None:
        resumed = f", resuming at epoch {info['start_epoch'] + 1}" if info["start_epoch"] else ""
        ddp = f" x {info['world']} processes" if info["world"] > 1 else ""
        self._say(
            f"{info['arch']} ({info['parameters']:,} parameters) on {info['device']}{ddp}, {info['precision']}"
            f"{'' if info['compiled'] == 'off' else ', compiled: ' + info['compiled']}: "
            f"{info['train']:,} training / {info['val']:,} validation images, "
            f"{info['classes']} classes{resumed}\nrun directory: {info['run_dir']}"
        )

    def progress(self, total: int, desc: str) -> Bar:
        return Bar(total, desc, enabled=not self.quiet)

    def epoch(self, row: dict) -> None:
        val = (
            f"val top-1 {row['val_top1']:.4f}  top-5 {row['val_top5']:.4f}"
            if row["val_top1"] is not None
            else "not validated (--val-every)"
        )
        self._say(
            f"epoch {row['epoch']:>3}  lr {row['lr']:.2g}  loss {row['train_loss']:.4f}  "
            f"train top-1 {row['train_top1']:.4f}  {val}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s"
        )

    def note(self, message: str) -> None:
        self._say(message)

    def warn(self, message: str) -> None:
        click.secho(f"warning: {message}", fg="yellow", err=True)

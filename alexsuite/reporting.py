"""What a long job tells its caller: progress, one-line news, warnings and named stages. The
library reports through a `Reporter`; each front door decides how to show it (the CLI's
subclass prints, this default stays silent)."""

from __future__ import annotations

import time
from contextlib import contextmanager


class NoProgress:
    """A progress counter that shows nothing: `bar(n, loss=None)` per step, then `close()`."""

    def __call__(self, n: int, loss: float | None = None) -> None: ...

    def close(self) -> None: ...

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Reporter:
    """Silent by default; override what you want to show."""

    def start(self, info: dict) -> None: ...  # a training run's set-up (arch, sizes, device)

    def progress(self, total: int, desc: str):  # a counter of `total` steps: NoProgress's calls and close()
        return NoProgress()

    def epoch(self, row: dict) -> None: ...  # one training epoch's metrics

    def warn(self, message: str) -> None: ...

    def note(self, message: str) -> None: ...  # one line of news (a stage starting, a file written)

    def stage(self, message: str) -> None:  # a pipeline's stage starting or done
        self.note(message)


class StageTimer:
    """Times a pipeline's named stages, in order, and has the reporter say each one's one-line
    result: `with stages("train") as s: ...; s["summary"] = "..."`. The records ({"stage",
    "seconds", "summary"}) are appended to `records`."""

    def __init__(self, reporter: Reporter, total: int, records: list | None = None):
        self.reporter, self.total = reporter, total
        self.records = [] if records is None else records

    @contextmanager
    def __call__(self, name: str):
        n = len(self.records) + 1
        self.reporter.stage(f"[{n}/{self.total}] {name}")
        record = {"stage": name, "seconds": 0.0, "summary": ""}
        start = time.perf_counter()
        yield record
        record["seconds"] = round(time.perf_counter() - start, 2)
        self.records.append(record)
        self.reporter.stage(f"[{n}/{self.total}] {name}: {record['summary']} ({record['seconds']:.0f} s)")

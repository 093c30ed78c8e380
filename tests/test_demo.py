"""`alexsuite demo` end to end at a small size: every stage runs for real, the report names
only pictures that exist and decode, and its numbers are what the separate commands print."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from alexsuite.cli.main import main

SMALL = ["--epochs", "1", "--train-scenes", "6", "--test-scenes", "3", "--finetune-iters", "20", "--workers", "0"]


class _Pictures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def _cli(*args) -> dict:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "run"
    summary = _cli("demo", "--out", str(out), "--json", *SMALL)
    return out, summary


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_its_results(demo):
    out, summary = demo
    assert [s["stage"] for s in summary["stages"]] == [
        "train",
        "evaluate",
        "index",
        "search",
        "retrieval",
        "scenes",
        "detector",
        "detect",
        "report",
    ]
    assert all(s["seconds"] >= 0 and s["summary"] for s in summary["stages"])
    saved = json.loads((out / "demo.json").read_text())
    assert saved["metrics"] == summary["metrics"] and saved["config"]["epochs"] == 1
    m = summary["metrics"]
    assert m["classification"]["images"] == 1000 and 0.3 < m["classification"]["top1"] <= 1  # 10 classes: chance 0.1
    assert m["index"]["images"] == 5000 and m["retrieval"]["queries"] == 1000
    assert m["detection"]["images"] == 3 and m["detection"]["ap"]
    assert set(m["detection"]["ap"]) <= {
        "tshirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "boot",
    }
    assert m["detector_training"]["finetune_resumed_at"] == 0
    assert (out / "index" / "meta.sqlite").exists() and (out / "detector" / "detector.json").exists()


@pytest.mark.slow
def test_every_picture_the_report_names_exists_and_is_an_image(demo):
    out, summary = demo
    page = (out / "report.html").read_text()
    parser = _Pictures()
    parser.feed(page)
    assert len(parser.sources) >= 5  # curves, filters, search sheet, detections
    for src in parser.sources:
        path = out / src
        assert not Path(src).is_absolute() and path.is_file(), src
        with Image.open(path) as im:
            im.verify()
    for value in ("top-1", "mAP", "seconds per image", "alexsuite eval-detector"):
        assert value in page


@pytest.mark.slow
def test_the_demos_numbers_are_the_separate_commands_numbers(demo):
    out, summary = demo
    m = summary["metrics"]
    model = str(out / "train" / "last.pt")
    ev = _cli("eval", model, "--ten-crop", "--json", "--workers", "0")
    assert ev["top1"] == m["classification"]["top1"] and ev["top5"] == m["classification"]["top5"]
    ret = _cli("eval-retrieval", "--model", model, "--metric", "cosine", "--json", "--workers", "0")
    assert ret["mAP"] == pytest.approx(m["retrieval"]["mAP"], abs=1e-9)
    assert ret["precision@10"] == pytest.approx(m["retrieval"]["precision@10"], abs=1e-9)
    det = _cli(
        "eval-detector",
        str(out / "scenes"),
        "--split",
        "test",
        "--detector",
        str(out / "detector"),
        "--json",
        "--workers",
        "0",
    )
    assert det["map"] == pytest.approx(m["detection"]["map"], abs=1e-9)
    found = CliRunner().invoke(
        main, ["search", str(out / "images" / "test" / "bag"), "--index", str(out / "index"), "-k", "3", "--json"]
    )
    lines = [json.loads(line) for line in found.stdout.splitlines()]
    assert len(lines) == 100 and all(len(q["results"]) == 3 for q in lines)


@pytest.mark.slow
def test_running_the_demo_again_carries_on_and_gives_the_same_numbers(demo):
    out, first = demo
    again = _cli("demo", "--out", str(out), "--json", *SMALL)
    m, m2 = first["metrics"], again["metrics"]
    assert m2["index"]["added"] == 0 and m2["index"]["images"] == 5000  # nothing embedded twice
    assert m2["detector_training"]["finetune_resumed_at"] == 20  # fine-tuning not redone
    assert m2["classification"] == m["classification"] and m2["retrieval"] == m["retrieval"]
    assert m2["detection"]["map"] == m["detection"]["map"]


def test_demo_refuses_a_file_as_its_folder(tmp_path):
    from alexsuite.demo import DemoConfig, run_demo
    from alexsuite.errors import ConfigError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="a file is in the way"):
        run_demo(DemoConfig(), blocker)

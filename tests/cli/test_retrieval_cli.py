"""`alexsuite index`, `search` and `eval-retrieval` end to end through the CLI."""

import json
import shutil

from click.testing import CliRunner
from PIL import Image

from alexsuite.cli.main import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_index_search_table_json_and_sheet(trained_run, shapes_dir, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(shapes_dir / "val", photos)
    (photos / "circle" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    index = tmp_path / "idx"
    result = run("index", photos, "--model", trained_run, "--index", index, "--workers", "0", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["added"], report["failed"], report["total"]) == (24, 1, 24)
    assert "broken.jpg" in report["failed_examples"][0]

    query = photos / "stripes" / "stripes_001.png"
    table = run("search", query, "--index", index, "-k", "3")
    assert table.exit_code == 0, table.output
    assert "rank" in table.stdout and "distance" in table.stdout and "[" in table.stdout

    sheet = tmp_path / "sheet.png"
    lines = run("search", query, photos / "square", "--id", 0, "--index", index, "-k", "4", "--json", "--sheet", sheet)
    assert lines.exit_code == 0, lines.output
    objects = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(objects) == 1 + 8 + 1
    assert objects[0]["query"] == str(query)
    assert [r["rank"] for r in objects[0]["results"]] == [1, 2, 3, 4]
    assert set(objects[0]["results"][0]) >= {"rank", "path", "distance", "id"}
    with Image.open(sheet) as img:
        assert img.width > 4 * 128 and img.height >= 10 * 128


def test_eval_retrieval_json(trained_run, shapes_dir):
    result = run("eval-retrieval", shapes_dir, "--model", trained_run, "--workers", "0", "-k", "1", "-k", "5", "--json")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert (r["queries"], r["database"]) == (24, 72)
    assert 1 / 3 < r["mAP"] <= 1 and r["precision@1"] > 0.5 and "precision@5" in r


def test_bad_inputs_are_one_line_errors(trained_run, shapes_dir, tmp_path):
    missing = run("search", shapes_dir / "val" / "circle" / "circle_000.png", "--index", tmp_path / "none")
    assert missing.exit_code == 2 and "no such index" in missing.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run("index", empty, "--model", trained_run, "--index", tmp_path / "idx")
    assert result.exit_code == 2 and "no image files" in result.output
    result = run("index", shapes_dir / "val", "--model", trained_run, "--index", tmp_path / "idx", "--workers", "0")
    assert result.exit_code == 0, result.output
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = run("search", text, "--index", tmp_path / "idx")
    assert result.exit_code == 2 and "not an image" in result.output
    result = run("index", shapes_dir / "val", "--model", trained_run, "--index", tmp_path / "idx", "--layer", "pool5")
    assert result.exit_code == 2 and "--rebuild" in result.output
    result = run(
        "index", shapes_dir / "val", "--model", trained_run, "--index", tmp_path / "idx2", "--factory", "IVF4096,PQ8"
    )
    assert result.exit_code == 2 and "Flat or HNSW32" in result.output and "Traceback" not in result.output

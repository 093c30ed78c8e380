"""`alexsuite proposals` (and, with issue 4, the detector's commands) through the CLI."""
import json

from click.testing import CliRunner
from PIL import Image

from alexsuite.cli.main import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_proposals_command_json_and_pictures(tmp_path):
    img = tmp_path / "scene.png"
    Image.new("RGB", (160, 120), (100, 100, 100)).save(img)
    with Image.open(img) as im:
        im.paste((220, 30, 30), (40, 30, 100, 90))
        im.save(img)
    result = run("proposals", img, "--json", "--out", tmp_path / "pics", "--workers", "0")
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.splitlines()[0])
    assert line["image"] == str(img) and len(line["boxes"]) >= 1 and len(line["boxes"][0]) == 4
    with Image.open(tmp_path / "pics" / "scene.png") as drawn:
        assert drawn.size == (160, 120)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    result = run("proposals", bad, "--workers", "0")
    assert result.exit_code == 2 and "bad.jpg" in result.output

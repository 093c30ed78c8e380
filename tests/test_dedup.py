"""Near-duplicate finding and whole-image descriptors: real photos (the bundled ones) and known
copies of them, a real trained model, the real index, command and server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps

import alexsuite
from alexsuite.api.index import duplicates_in
from alexsuite.cli.main import main
from alexsuite.embedding import IMAGE_LAYERS, WHOLE_IMAGE_LAYERS
from alexsuite.errors import ConfigError
from alexsuite.models.pooling import gem, regions, rmac
from alexsuite.retrieval.dedup import DedupSettings, star_groups

PHOTOS = Path(alexsuite.__file__).parent / "data" / "bundled" / "photos"


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> Path:
    """Four bundled photos, and of them: a byte copy, a mirror, a half-size JPEG (quality 60)."""
    root = tmp_path_factory.mktemp("dedup") / "photos"
    root.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"):
        shutil.copy(PHOTOS / name, root / name)
    shutil.copy(PHOTOS / "rocket.jpg", root / "rocket-again.jpg")
    ImageOps.mirror(Image.open(PHOTOS / "chelsea.jpg")).save(root / "chelsea-mirrored.jpg", quality=50)
    img = Image.open(PHOTOS / "coffee.jpg")
    img.resize((img.width // 2, img.height // 2)).save(root / "coffee-small.jpg", quality=60)
    return root


def test_gem_and_rmac_pool_a_map_into_unit_vectors():
    fmap = torch.rand(2, 8, 6, 9)
    assert torch.allclose(gem(fmap, p=1.0), torch.nn.functional.normalize(fmap.mean(dim=(2, 3)), dim=1), atol=1e-5)
    assert torch.allclose(rmac(fmap).norm(dim=1), torch.ones(2))
    spike = torch.zeros(1, 8, 6, 9)
    spike[0, 3, 5, 8] = 1.0  # the far corner: some region must cover it
    assert rmac(spike)[0].argmax() == 3
    covered = np.zeros((6, 9), bool)
    for top, left, side in regions(6, 9):
        covered[top : top + side, left : left + side] = True
    assert covered.all()


def test_whole_image_descriptors_see_the_whole_image_and_ignore_mirroring(trained_run):
    model = alexsuite.Model(trained_run, device="cpu")
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 255, (40, 120, 3), dtype=np.uint8)
    edited = wide.copy()
    edited[:, :30] = 255  # outside the central square only
    for layer in WHOLE_IMAGE_LAYERS:
        v = model.embed([wide, edited, wide[:, ::-1].copy()], layer=layer)
        assert v.shape[1] == 64 and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
        assert np.abs(v[0] - v[1]).max() > 1e-3  # the edge it changed counts
        assert np.allclose(v[0], v[2], atol=1e-5)  # a mirror image gets the same vector
    fc7 = model.embed([wide, edited], layer="fc7")
    assert np.allclose(fc7[0], fc7[1])  # fc7 reads the centre crop only


def test_star_groups_do_not_chain():
    rows = {i: (i, f"{'x' * (5 - i)}.jpg", 100 - i, "") for i in range(4)}  # 0 is the largest file
    near = {0: {1: 0.01}, 1: {0: 0.01, 2: 0.01}, 2: {1: 0.01, 3: 0.01}, 3: {2: 0.01}}
    assert [(k, sorted(m)) for k, m in star_groups(rows, near)] == [(0, [1]), (2, [3])]


def test_dedup_finds_the_copies_and_nothing_else(copies, trained_run):
    groups = duplicates_in(copies, model=str(trained_run), device="cpu", threshold=0.002)
    assert sorted(sorted(Path(p).name for p in g.paths) for g in groups) == [
        ["chelsea-mirrored.jpg", "chelsea.jpg"],
        ["coffee-small.jpg", "coffee.jpg"],
        ["rocket-again.jpg", "rocket.jpg"],
    ]
    found = {Path(d["path"]).name: d for g in groups for d in g.duplicates}
    assert found["rocket-again.jpg"]["exact"] is True  # same size: the shorter name is kept
    assert found["chelsea-mirrored.jpg"]["distance"] < 1e-3 and not found["chelsea-mirrored.jpg"]["exact"]
    exact_only = duplicates_in(copies, model=str(trained_run), device="cpu", threshold=0)
    assert [(Path(g.keep).name, [Path(d["path"]).name for d in g.duplicates]) for g in exact_only] == [
        ("rocket.jpg", ["rocket-again.jpg"])
    ]


def test_the_command_writes_json_a_list_and_sheets_and_deletes_nothing(copies, trained_run, tmp_path):
    before = sorted(p.name for p in copies.iterdir())
    listing, sheets = tmp_path / "remove.txt", tmp_path / "sheets"
    result = CliRunner().invoke(
        main,
        ["dedup", str(copies), "--model", str(trained_run), "--device", "cpu", "--threshold", "0.002", "--json"]
        + ["--list-to-remove", str(listing), "--sheet", str(sheets)],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert {Path(g["keep"]).name for g in lines} == {"rocket.jpg", "chelsea.jpg", "coffee.jpg"}
    assert all({"path", "distance", "exact"} <= set(d) for g in lines for d in g["duplicates"])
    assert sorted(Path(p).name for p in listing.read_text().splitlines()) == [
        "chelsea-mirrored.jpg",
        "coffee-small.jpg",
        "rocket-again.jpg",
    ]
    assert sorted(p.name for p in sheets.iterdir()) == ["group-0001.png", "group-0002.png", "group-0003.png"]
    assert Image.open(sheets / "group-0001.png").width > 200
    assert sorted(p.name for p in copies.iterdir()) == before


def test_the_command_reads_an_index_and_refuses_unclear_input(val_index, copies):
    runner = CliRunner()
    result = runner.invoke(main, ["dedup", "--index", str(val_index), "--threshold", "0", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # 24 distinct drawings: no byte copies
    result = runner.invoke(main, ["dedup", "--index", str(val_index), "--json"])
    assert result.exit_code == 0, result.output
    for line in result.stdout.splitlines():  # fc7's default threshold: every copy near its kept image
        assert all(d["distance"] <= DedupSettings().threshold_for("fc7") for d in json.loads(line)["duplicates"])
    both = runner.invoke(main, ["dedup", str(copies), "--index", str(val_index)])
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(main, ["dedup", str(copies), "--layer", "conv9"])
    assert bad.exit_code == 2


def test_the_api_on_an_index(val_index):
    with alexsuite.Index(val_index, device="cpu") as index:
        loose = index.duplicates(threshold=0.5)
        assert loose and all(len(g.paths) == 1 + len(g.duplicates) for g in loose)
        assert len({p for g in loose for p in g.paths}) == sum(len(g.paths) for g in loose)  # each image once
        assert index.duplicates(threshold=0) == []
        with pytest.raises(ConfigError, match="--threshold"):
            index.duplicates(threshold=5)


def test_every_image_layer_is_offered_by_index():
    assert set(WHOLE_IMAGE_LAYERS) <= set(IMAGE_LAYERS)
    result = CliRunner().invoke(main, ["index", "--help"])
    assert all(layer in result.output for layer in IMAGE_LAYERS)

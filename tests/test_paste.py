"""Copy-paste pre-training (`alexsuite train --paste-on`): objects on black pasted, tinted,
onto crops of photos, with every draw keyed so a resumed run pastes what an unbroken one did."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alexsuite.data.paste import background_bank, paste
from alexsuite.errors import DataError
from alexsuite.models.checkpoint import read_checkpoint
from alexsuite.training.config import TrainConfig
from alexsuite.training.run import train


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(root / f"p{i}.png")
    (root / "README.md").write_text("not a photo")
    return root


def test_paste_tints_the_object_and_shows_a_photo_crop_around_it(photos):
    bank = background_bank(photos, 32, n=8, seed=0)
    assert bank.shape == (8, 3, 32, 32) and bank.dtype == torch.uint8
    assert torch.equal(bank, background_bank(photos, 32, n=8, seed=0))  # the same seed, the same bank
    assert not torch.equal(bank, background_bank(photos, 32, n=8, seed=1))
    objects = torch.zeros(2, 1, 32, 32, dtype=torch.uint8)
    objects[:, :, 8:24, 10:20] = 200
    params = {"background": torch.tensor([3, 5]), "tint": torch.tensor([[1.0, 0.5, 0.3], [0.3, 1.0, 1.0]])}
    out = paste(objects, bank, params)
    assert out.shape == (2, 3, 32, 32)
    assert out[0, :, 8:24, 10:20].flatten(1).unique(dim=1).flatten().tolist() == [200, 100, 60]
    assert torch.equal(out[0, :, :8], bank[3, :, :8]) and torch.equal(out[1, :, 24:], bank[5, :, 24:])


def test_a_folder_without_photos_is_a_clear_error_before_anything_is_written(tmp_path, shapes_dir):
    (tmp_path / "notes.txt").write_text("no photos here")
    with pytest.raises(DataError, match="no readable photo"):
        background_bank(tmp_path, 32)
    with pytest.raises(DataError, match="no readable photo"):
        train(TrainConfig(data=str(shapes_dir), epochs=1, workers=0, paste_on=str(tmp_path)), run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_pasted_training_resumes_to_the_same_weights(shapes_dir, photos, tmp_path):
    cfg = dict(data=str(shapes_dir), batch_size=12, lr=0.02, workers=0, paste_on=str(photos), device="cpu")
    train(TrainConfig(epochs=2, **cfg), run_dir=tmp_path / "straight")
    train(TrainConfig(epochs=1, **cfg), run_dir=tmp_path / "interrupted")
    train(TrainConfig(epochs=2, workers=0, device="cpu"), resume=tmp_path / "interrupted")
    a = read_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "interrupted" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "interrupted" / "config.json").read_text())["paste_on"] == str(photos)
    # pasting changes what the network learns from: the same run without it ends elsewhere
    plain = train(
        TrainConfig(epochs=2, data=str(shapes_dir), batch_size=12, lr=0.02, workers=0), run_dir=tmp_path / "plain"
    )
    c = read_checkpoint(plain.run_dir / "last.pt")["model"]
    assert not torch.equal(c["body.0.weight"], a["body.0.weight"])


def test_resuming_onto_other_photos_is_refused(shapes_dir, photos, tmp_path):
    """The background bank is drawn from the photos, so a run resumed onto changed photos
    would silently paste onto other backgrounds: it stops with a one-line error instead."""
    import shutil

    from alexsuite.errors import ConfigError

    mine = tmp_path / "photos"
    shutil.copytree(photos, mine)
    cfg = TrainConfig(data=str(shapes_dir), epochs=1, batch_size=12, workers=0, paste_on=str(mine))
    train(cfg, run_dir=tmp_path / "run")
    Image.fromarray(np.zeros((90, 120, 3), np.uint8)).save(mine / "p0.png")
    with pytest.raises(ConfigError, match="photos changed since this run began"):
        train(TrainConfig(epochs=2, workers=0), resume=tmp_path / "run")
    shutil.rmtree(mine)
    with pytest.raises(DataError, match="no such folder"):
        train(TrainConfig(epochs=2, workers=0), resume=tmp_path / "run")
    assert read_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 0  # the run is as it was


def test_a_pasted_run_takes_its_statistics_from_pasted_images(photos):
    """Objects on black alone give grey statistics, and a PCA lighting (paper 4.1) that only
    changes brightness; the network sees them pasted on colour photos, so those are measured."""
    from alexsuite.data.datasets import ArrayDataset
    from alexsuite.training.setup import preprocess_for

    objects = torch.zeros(64, 1, 32, 32, dtype=torch.uint8)
    objects[:, :, 10:22, 8:24] = 200
    data = ArrayDataset(objects, torch.zeros(64, dtype=torch.long), ["article"], "objects")
    cfg = TrainConfig(data="objects", arch="alexnet-small", paste_on=str(photos))
    plain = preprocess_for(cfg, data)
    pasted = preprocess_for(cfg, data, background_bank(photos, 32, n=16, seed=0))
    assert max(plain.eigval[:2]) < 1e-9 and plain.eigval[2] > 0.01  # one direction: grey
    assert min(pasted.eigval) > 1e-3  # colour varies as well
    assert min(pasted.mean) > plain.mean[0] + 0.1  # the photos' noise is brighter than black

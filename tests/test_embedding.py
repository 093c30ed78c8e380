"""The one batching path for features: batched vectors equal one-image-at-a-time vectors, and
unreadable files drop out of their batch without shifting anyone else's vector."""

import numpy as np
import pytest
import torch

from alexsuite.data import transforms
from alexsuite.data.datasets import folder_dataset
from alexsuite.data.decode import load_square
from alexsuite.embedding import embed_batches, embed_labelled, feature_dim, file_dataset
from alexsuite.errors import ConfigError
from alexsuite.models.checkpoint import load_model


@pytest.fixture(scope="module")
def loaded(trained_run):
    return load_model(trained_run)


def _one_by_one(loaded, path, layer):
    arr = load_square(path, loaded.preprocess.base_size)
    x = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        model = loaded.model.to(memory_format=torch.contiguous_format)
        return model.features(transforms.center_crop(x, loaded.preprocess), layer).flatten(1)[0].numpy()


@pytest.mark.parametrize("layer", ["fc7", "pool5"])
def test_batched_vectors_match_single_images_and_skip_bad_files(loaded, shapes_dir, tmp_path, layer):
    paths = sorted((shapes_dir / "val").rglob("*.png"))[:10]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really")
    files = paths[:3] + [bad] + paths[3:]
    batches = list(
        embed_batches(
            loaded.model,
            file_dataset(files, loaded.preprocess.base_size),
            loaded.preprocess,
            layer,
            "cpu",
            batch_size=4,
            workers=0,
        )
    )
    positions = np.concatenate([b.positions.numpy() for b in batches])
    vectors = np.concatenate([b.vectors for b in batches])
    failures = [f for b in batches for f in b.failures]
    assert list(positions) == [0, 1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert len(failures) == 1 and failures[0].path == str(bad)
    assert vectors.shape == (10, feature_dim(loaded.model, loaded.preprocess, layer)) and vectors.dtype == np.float32
    for pos, vec in zip(positions, vectors):
        np.testing.assert_allclose(vec, _one_by_one(loaded, files[pos], layer), rtol=1e-4, atol=1e-4)


def test_embed_labelled_keeps_labels_with_their_vectors(loaded, shapes_dir):
    data = folder_dataset(shapes_dir / "val", loaded.preprocess.base_size)
    vectors, labels, failures = embed_labelled(loaded.model, data, loaded.preprocess, "fc7", "cpu", batch_size=5)
    assert len(vectors) == len(data) == 24 and not failures
    assert list(labels) == data.labels.tolist()


def test_unknown_layer_is_a_clear_error(loaded):
    with pytest.raises(ConfigError, match="fc7"):
        list(embed_batches(loaded.model, file_dataset([], 32), loaded.preprocess, "fc9"))


def test_warped_regions_pad_with_the_mean_and_keep_the_box_inside(loaded):
    pre = loaded.preprocess  # 28 px crops: context padding 2 px
    image = torch.full((3, 40, 60), 200, dtype=torch.uint8)
    from alexsuite.detection.framing import context_padding, warp_regions
    from alexsuite.detection.regions import head_features, rcnn_pool5

    assert context_padding(227) == 16 and context_padding(28) == 2
    inside, half_out = torch.tensor([[10.0, 10.0, 30.0, 30.0]]), torch.tensor([[40.0, 10.0, 80.0, 30.0]])
    crops = warp_regions(image, torch.cat([inside, half_out]), pre)
    value = transforms.normalize(image[None, :, :1, :1], pre)[0, :, 0, 0]
    assert crops.shape == (2, 3, 28, 28)
    assert torch.allclose(crops[0], value[:, None, None].expand(3, 28, 28), atol=1e-5)  # all image
    assert torch.allclose(crops[1, :, :, -6:], torch.zeros(3, 28, 6), atol=1e-6)  # outside: mean
    many = torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 50.0, 35.0], [30.0, 0.0, 60.0, 40.0]])
    one_batch = head_features(loaded.model, rcnn_pool5(loaded.model, image, many, pre, batch_size=3), "fc7")
    small_batches = head_features(loaded.model, rcnn_pool5(loaded.model, image, many, pre, batch_size=1), "fc7")
    np.testing.assert_allclose(one_batch.numpy(), small_batches.numpy(), rtol=1e-4, atol=1e-5)
    assert one_batch.shape == (3, feature_dim(loaded.model, pre, "fc7"))

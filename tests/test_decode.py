"""The one image decoder on every kind of file users actually have."""

import io

import numpy as np
import pytest
from PIL import Image

from alexsuite.data.decode import decode_image, load_square
from alexsuite.errors import ImageDecodeError


def _gradient(w=40, h=30):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 6, y * 8, (x + y) * 3], -1).astype(np.uint8)


def test_rgb_grayscale_cmyk_and_palette_become_rgb(tmp_path):
    rgb = _gradient()
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.gif")
    assert np.array_equal(decode_image(tmp_path / "rgb.png"), rgb)
    grey = decode_image(tmp_path / "grey.png")
    assert grey.shape == (30, 40, 3) and np.array_equal(grey[..., 0], rgb[..., 0])
    assert np.array_equal(grey[..., 0], grey[..., 2])
    cmyk = decode_image(tmp_path / "cmyk.jpg")
    assert cmyk.shape == (30, 40, 3) and np.abs(cmyk.astype(int) - rgb).mean() < 12
    assert decode_image(tmp_path / "palette.gif").shape == (30, 40, 3)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = decode_image(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (200, 0, 0)
    assert tuple(out[9, 9]) == (255, 255, 255)


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    out = decode_image(tmp_path / "deep.png")[0, :, 0]
    assert out.tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_gradient(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert decode_image(tmp_path / "rot.jpg").shape == (40, 20, 3)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("notes.jpg", b"these are words, not pixels", "not an image"),
        ("empty.png", b"", "not an image"),
    ],
)
def test_non_images_raise_a_named_error(tmp_path, name, content, reason):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason) as e:
        decode_image(tmp_path / name)
    assert name in str(e.value)


def test_truncated_jpeg_is_an_error_not_a_grey_half(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(tmp_path / "cut.jpg")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageDecodeError, match="no such file"):
        decode_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageDecodeError, match="directory"):
        decode_image(tmp_path)


def test_huge_jpeg_decodes_at_reduced_size(tmp_path):
    Image.new("RGB", (8000, 6000), (10, 120, 200)).save(tmp_path / "big.jpg", quality=80)
    out = load_square(tmp_path / "big.jpg", 64)
    assert out.shape == (64, 64, 3)
    assert np.abs(out.astype(int) - (10, 120, 200)).max() < 6


def test_decode_errors_survive_the_trip_back_from_a_worker():
    import pickle

    err = pickle.loads(pickle.dumps(ImageDecodeError("a/b.jpg", "corrupt or truncated image")))
    assert isinstance(err, ImageDecodeError) and err.path == "a/b.jpg" and "corrupt" in str(err)

"""The one image decoder: any file Pillow reads, in any colour mode, becomes RGB uint8.

Every failure a user's file can cause (not an image, truncated, corrupt, absurdly large)
raises ImageDecodeError naming the file, so callers can skip-and-count or stop (--strict).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import ImageDecodeError
from ..fileio import NotARegularFile, open_regular

# The formats Pillow may open: those of IMAGE_SUFFIXES (JPEG covers cameras' multi-picture MPO).
# Never EPS, whose PostScript Pillow hands to Ghostscript, whatever the file is named.
FORMATS = ("JPEG", "PNG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}

# Decoding is bounded by `draft` and resizing, so allow large photos (Pillow's default bomb
# guard, 89 MP, rejects real panoramas) but keep a ceiling against decompression bombs.
MAX_PIXELS = 400_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit (and 32-bit integer) greyscale: scale by the type's range, not by clipping.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo if hi > lo else 1.0) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent pixels become white, as a viewer shows them on a page.
        rgba = img if img.mode == "RGBA" else img.convert("RGBA")  # converting to its own mode copies
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    if img.mode == "RGB":
        return img  # converting would copy it
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def decode_image(path, min_side: int | None = None) -> np.ndarray:
    """Decode `path` to an HxWx3 uint8 RGB array, honouring EXIF orientation.

    `min_side`: the caller will shrink the image until its shorter side is this long, so
    JPEG decoding may use DCT scaling (`draft`) to skip work on huge photos.
    """
    return _as_array(path, open_rgb(path, min_side))


def open_rgb(path, min_side: int | None = None) -> Image.Image:
    """The decoded RGB image of `path` (see decode_image)."""
    with _opened(path) as img:
        return _decoded(img, min_side)


def decode_bytes(data: bytes, name: str, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An uploaded file's bytes as an HxWx3 uint8 RGB array, with decode_image's formats and
    checks; `max_pixels` (checked from the header, before any pixel is decoded) may be tighter
    than the files' cap. Errors name the upload `name`."""
    with _opened(io.BytesIO(data), name) as img:
        if img.size[0] * img.size[1] > max_pixels:
            raise ImageDecodeError(name, f"image too large ({img.size[0]}x{img.size[1]}, over {max_pixels:,} pixels)")
        return _as_array(name, _decoded(img, None))


def _decoded(img: Image.Image, min_side: int | None) -> Image.Image:
    """An opened image decoded to RGB, EXIF orientation applied, JPEG DCT-scaled toward `min_side`."""
    if min_side and img.format == "JPEG":
        scale = min(img.size) / min_side
        if scale >= 2:
            img.draft("RGB", (img.size[0] // int(scale), img.size[1] // int(scale)))
    img.load()
    with contextlib.suppress(Exception):  # EXIF too damaged to say an orientation: the pixels stand as stored
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy of a huge image
    return _to_rgb(img)


def image_size(path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding its pixels; the same checks
    and errors as decode_image (a regular file, a known format, under the pixel cap)."""
    with _opened(path) as img:
        return img.size


@contextlib.contextmanager
def _opened(path, name: str | None = None):
    """`path` (or bytes in memory, called `name`) opened by Pillow, only if it is a regular file
    (a named pipe or device never blocks the reader) in one of FORMATS; every failure, while
    opening or while the caller decodes, as an ImageDecodeError naming the file. Pillow's
    warnings about odd metadata stay quiet; a decompression bomb is an error."""
    memory = name is not None
    source, path = (path, Path(name)) if memory else (None, Path(path))
    try:
        with warnings.catch_warnings(), contextlib.nullcontext(source) if memory else open_regular(path) as f:
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f, formats=FORMATS) as img:
                yield img
    except FileNotFoundError:
        raise ImageDecodeError(path, "no such file") from None
    except NotARegularFile as e:
        raise ImageDecodeError(
            path, "is a directory, not an image" if "directory" in e.strerror else e.strerror
        ) from None
    except PermissionError:
        raise ImageDecodeError(path, "permission denied") from None
    except Image.UnidentifiedImageError:
        empty = source.getbuffer().nbytes == 0 if memory else path.is_file() and path.stat().st_size == 0
        raise ImageDecodeError(
            path, "not an image file (it is empty)" if empty else "not an image file (unknown format)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageDecodeError(path, f"image too large (over {MAX_PIXELS:,} pixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageDecodeError(path, f"corrupt or truncated image ({e})") from None


def _as_array(path, img: Image.Image) -> np.ndarray:
    if min(img.size) == 0:
        raise ImageDecodeError(path, f"empty image of size {img.size[0]}x{img.size[1]}")
    return np.asarray(img, dtype=np.uint8)


MAX_ASPECT = 16  # longer/shorter side beyond which only the central part is scaled (a 100000x1 strip)


def _shorter_side_to(img: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is `size` (area filter when shrinking, as Caffe's tools did).
    A strip longer than MAX_ASPECT times its width keeps only its central MAX_ASPECT squares,
    so scaling it up cannot need gigabytes; the central square every caller takes is inside."""
    img = _central_part(img)
    w, h = img.size
    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    if new == (w, h):
        return img
    return img.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0 if scale < 1 else None)


def _central_part(img: Image.Image) -> Image.Image:
    w, h = img.size
    short, long = min(w, h), max(w, h)
    if long <= MAX_ASPECT * short:
        return img
    keep = MAX_ASPECT * short
    start = (long - keep) // 2
    return img.crop((start, 0, start + keep, h) if w > h else (0, start, w, start + keep))


def resize_shorter_side(arr: np.ndarray, size: int) -> np.ndarray:
    """Scale an HxWx3 array so its shorter side is `size` (see _shorter_side_to)."""
    return np.asarray(_shorter_side_to(Image.fromarray(arr), size))


def center_square(arr: np.ndarray, size: int) -> np.ndarray:
    h, w = arr.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return arr[top : top + size, left : left + size]


def warp_whole(img: Image.Image, size: int) -> np.ndarray:
    """The whole image scaled to size x size whatever its shape (R-CNN §2.1 warps regions the
    same way), so nothing of it is cut off; a strip keeps its central part (MAX_ASPECT)."""
    img = _central_part(img)
    if min(img.size) == 0:
        raise ValueError(f"empty image of size {img.size[0]}x{img.size[1]}")
    scale = size / min(img.size)
    resized = img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0 if scale < 1 else None)
    return np.asarray(resized, dtype=np.uint8)


def load_warped(path, size: int) -> np.ndarray:
    """A file as warp_whole's size x size RGB array, decoded at no more than it needs."""
    img = open_rgb(path, min_side=size)
    try:
        return warp_whole(img, size)
    except ValueError as e:
        raise ImageDecodeError(path, str(e)) from None


def load_square(path, size: int) -> np.ndarray:
    """AlexNet §2: rescale so the shorter side is `size`, then take the central square. The
    image is resized before it becomes an array, so a huge one is held once, not thrice."""
    img = open_rgb(path, min_side=size)
    if min(img.size) == 0:
        raise ImageDecodeError(path, f"empty image of size {img.size[0]}x{img.size[1]}")
    return center_square(np.asarray(_shorter_side_to(img, size), dtype=np.uint8), size)

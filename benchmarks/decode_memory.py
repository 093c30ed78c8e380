"""Peak memory and time to read one huge image, the way `index`/`search` read it (load_square:
shorter side to 256, centre crop) and the way `detect` reads it (the whole image, then at most
2,000 px on its longer side), against the plain Pillow reading alexsuite used before (decode,
EXIF-transpose and convert to RGB each make a copy, then numpy and the resize make more). Each
measurement is a fresh process, so peaks do not mix.

    python benchmarks/decode_memory.py [--out runs/bench/huge]

The images are made here: a 19000 x 19000 RGB PNG (1 MB on disk, 361 megapixels, under the
400-megapixel cap), the same size in greyscale, a 12000 x 12000 RGBA PNG and an 8000 x 8000 JPEG.
Writes benchmarks/results/decode_memory.json.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from _common import write_result

IMAGES = {  # name: (side, Pillow mode, format)
    "rgb-19000.png": (19000, "RGB", "PNG"),
    "grey-19000.png": (19000, "L", "PNG"),
    "rgba-12000.png": (12000, "RGBA", "PNG"),
    "photo-8000.jpg": (8000, "RGB", "JPEG"),
}

READERS = {
    "load_square (index, search)": "from alexsuite.data.decode import load_square as f; f(path, 256)",
    "decode_image + bound (detect)": (
        "from alexsuite.data.decode import decode_image; from alexsuite.detection.inference import _bounded; "
        "_bounded(decode_image(path))"
    ),
    "plain Pillow (reference)": (
        "import numpy as np; from PIL import Image, ImageOps; Image.MAX_IMAGE_PIXELS = 400_000_000\n"
        "with Image.open(path) as im:\n    im.load(); rgb = ImageOps.exif_transpose(im).convert('RGB')\n"
        "a = np.asarray(rgb, dtype=np.uint8); s = 256 / min(a.shape[:2])\n"
        "Image.fromarray(a).resize((round(a.shape[1] * s), round(a.shape[0] * s)), Image.BILINEAR, reducing_gap=3.0)"
    ),
}

# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the parent across exec
PROBE = """
import sys, time
path = sys.argv[1]
start = time.perf_counter()
{code}
seconds = time.perf_counter() - start
peak = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM"))
print(seconds, peak / 1024)
"""


def make(folder: Path) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    for name, (side, mode, fmt) in IMAGES.items():
        if (folder / name).exists():
            continue
        img = Image.new(mode, (side, side), 60 if mode == "L" else (30, 60, 90, 255)[: len(mode)])
        ImageDraw.Draw(img).ellipse(
            (side // 5, side // 5, 4 * side // 5, 4 * side // 5),
            fill=200 if mode == "L" else (200, 100, 50, 128)[: len(mode)],
        )
        img.save(folder / name, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        del img


def measure(code: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE.format(code=code), str(path)], capture_output=True, text=True)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    seconds, peak = (float(x) for x in done.stdout.split())
    return {"seconds": round(seconds, 2), "peak_mb": round(peak)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/huge", help="where the test images are made")
    ap.add_argument("--make", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make:
        return make(Path(args.make))
    folder = Path(args.out)
    subprocess.run([sys.executable, __file__, "--make", str(folder)], check=True)  # its memory stays there
    rows = {}
    for name in IMAGES:
        rows[name] = {
            "file_mb": round((folder / name).stat().st_size / 2**20, 1),
            **{reader: measure(code, folder / name) for reader, code in READERS.items()},
        }
        ours, ref = rows[name]["load_square (index, search)"], rows[name]["plain Pillow (reference)"]
        if "peak_mb" in ours and "peak_mb" in ref:
            rows[name]["peak_ratio"] = round(ref["peak_mb"] / ours["peak_mb"], 2)
        print(name, json.dumps(rows[name]))
    write_result("decode_memory", {"images": rows, "pixel_cap": 400_000_000})


if __name__ == "__main__":
    main()

"""The Python API on what `make demo` wrote: label, embed, search and detect, then save pictures.

.venv/bin/python examples/quickstart.py            # after `make demo`
.venv/bin/python examples/quickstart.py RUN INDEX DETECTOR IMAGE PHOTO OUT   # any other files
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

import alexsuite

run, index_dir, detector_dir, image, photo, out = (
    sys.argv[1:7]
    if len(sys.argv) > 6
    else [
        "runs/demo/train",
        "runs/demo/index",
        "runs/demo/detector",
        "runs/demo/images/test/bag/bag_0000.png",
        "runs/demo/scenes/JPEGImages/test_0004.jpg",
        "runs/quickstart",
    ]
)
Path(out).mkdir(parents=True, exist_ok=True)

model = alexsuite.Model(run)  # a run directory, a checkpoint or torchvision AlexNet weights
pixels = np.asarray(Image.open(image).convert("RGB"))  # paths, PIL images, arrays and tensors all work
for p in model.predict([image, pixels], k=3):
    print(p.image, list(zip(p.labels, [round(x, 3) for x in p.probs])))
print("fc7:", model.embed([image, pixels]).shape)

index = alexsuite.Index(index_dir)  # read-only until .add(...)
hits = index.search(image, k=5)[0]
print("nearest:", [(h.rank, Path(h.path).name, round(h.distance, 3)) for h in hits.results])
hits.save(f"{out}/search.png")

det = alexsuite.Detector(detector_dir)
found = det.detect(photo, threshold=-0.5)[0]
print("boxes:", found.to_dict()["detections"][:3])
found.save(f"{out}/detections.png")
print("pictures:", out)

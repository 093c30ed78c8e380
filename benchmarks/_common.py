"""Shared by the benchmark scripts: where results go and how they are written."""

import json
import platform
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
# scenes-dev: the developers' Pascal VOC detection set, kept beside this repository (made by
# ../shared/tools/make_scenes.py: Fashion-MNIST articles pasted on real photos, train and val
# splits). Users do not have it: `alexsuite scenes DIR` writes a set of the same kind from the
# bundled data, and the detection benchmarks take it with --data DIR.
SCENES_DEV = "../shared/data/scenes-dev"


def machine() -> dict:
    """What a result depends on beyond the code. The CPU model and the SIMD kernels torch picked
    are kept because float results (and so a training run's trajectory) differ between them
    (CHANGELOG.md records a pre-training run that left its recorded trajectory on another CPU)."""
    return {
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({**payload, "machine": machine()}, indent=1))
    return path


def detector_arguments(ap, detector: str) -> None:
    """The options every scenes-dev detector benchmark that trains shares: the data, the detector
    directory, --train, the backbone and the proposal cache."""
    ap.add_argument("--data", default=SCENES_DEV, help="a Pascal VOC set (default: the developers' scenes-dev)")
    ap.add_argument("--detector", default=detector)
    ap.add_argument("--train", action="store_true", help="train the detector first (resumes from its cache)")
    ap.add_argument("--backbone", default="runs/bench/fashion-mnist-paste-leaveout/last.pt")
    ap.add_argument("--cache", default="runs/bench/proposals-cache", help="proposal cache for the mAP runs")


def run_main(main) -> None:
    """Run a benchmark's main; a full disk or a missing backbone ends in one line, as the CLI's."""
    from alexsuite.errors import AlexsuiteError

    try:
        main()
    except AlexsuiteError as e:
        sys.exit(f"error: {e}")


def fc_seconds(model, rois: int, repeat: int = 3) -> float:
    """fc6 + fc7 on `rois` pool5 rows (the best of `repeat`)."""
    x = torch.randn(rois, model.pool5_dim)
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeat):
            start = time.perf_counter()
            model.head(x, "fc7")
            best = min(best, time.perf_counter() - start)
    return best

"""`alexsuite demo` from scratch, its wall time per stage and in total (goal: at most
10 minutes on a 2-core CPU), against the same work done by the separate commands in the
same run, and whether the demo's metrics are the numbers those commands print.

    python benchmarks/demo.py [--out runs/bench/demo]

1. `alexsuite demo --out OUT --json` in a fresh folder (a fresh process: imports included);
2. the reference, each a fresh process over the same files: `alexsuite train` (same settings,
   another folder), `eval --ten-crop`, `index`, `search`, `eval-retrieval`, `train-detector`
   (same scenes and settings, another folder) and `eval-detector`;
3. the metrics of 1 against those of the evaluation commands run on the demo's own model,
   index and detector (they must be equal: the demo calls the same library functions).
Writes benchmarks/results/demo.json.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import write_result

ALEXSUITE = [sys.executable, "-m", "alexsuite.cli"]


def run(*args) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([*ALEXSUITE, *args], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"alexsuite {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench/demo")
    a = ap.parse_args()
    out, ref = Path(a.out), Path(a.out + "-separate")
    for d in (out, ref):
        shutil.rmtree(d, ignore_errors=True)

    demo_s, stdout = run("demo", "--out", str(out), "--json")
    demo = last_json(stdout)
    cfg = json.loads((out / "demo.json").read_text())["config"]
    print(f"demo: {demo_s:.1f} s wall, stages {demo['total_seconds']:.1f} s")
    for s in demo["stages"]:
        print(f"  {s['stage']:<10} {s['seconds']:>6.1f} s  {s['summary']}")

    # The same work as separate commands, each a fresh process.
    model = str(out / "train" / "last.pt")
    steps = {
        "train": ("train", "--epochs", str(cfg["epochs"]), "--out", str(ref / "train"), "--json", "-q"),
        "evaluate": ("eval", model, "--ten-crop", "--json"),
        "index": (
            "index",
            str(out / "images" / "train"),
            "--index",
            str(ref / "index"),
            "--model",
            model,
            "--metric",
            cfg["metric"],
            "--json",
        ),
        "search": (
            "search",
            *[
                str(out / "images" / "test" / c / f"{c}_0000.png")
                for c in sorted(p.name for p in (out / "images" / "test").iterdir())
            ],
            "--index",
            str(ref / "index"),
            "-k",
            str(cfg["search_k"]),
            "--sheet",
            str(ref / "search.png"),
            "--json",
        ),
        "retrieval": ("eval-retrieval", "--model", model, "--metric", cfg["metric"], "--json"),
        "detector": (
            "train-detector",
            str(out / "scenes"),
            "--backbone",
            model,
            "--out",
            str(ref / "detector"),
            "--finetune-iters",
            str(cfg["finetune_iters"]),
            "--lr",
            str(cfg["finetune_lr"]),
            "--max-boxes",
            str(cfg["max_boxes"]),
            "--json",
            "-q",
        ),
        "detect": (
            "eval-detector",
            str(out / "scenes"),
            "--split",
            "test",
            "--detector",
            str(out / "detector"),
            "--mode",
            cfg["detect_mode"],
            "--json",
        ),
    }
    separate, outputs = {}, {}
    for name, args in steps.items():
        separate[name], text = run(*args)
        outputs[name] = last_json(text)
        print(f"  separate {name:<10} {separate[name]:>6.1f} s")
    separate_total = sum(separate.values())

    m = demo["metrics"]
    pairs = {
        "top1 (10-crop)": (m["classification"]["top1"], outputs["evaluate"]["top1"]),
        "top5 (10-crop)": (m["classification"]["top5"], outputs["evaluate"]["top5"]),
        "retrieval mAP": (m["retrieval"]["mAP"], outputs["retrieval"]["mAP"]),
        "retrieval P@10": (m["retrieval"]["precision@10"], outputs["retrieval"]["precision@10"]),
        "detection mAP": (m["detection"]["map"], outputs["detect"]["map"]),
        "detection mAP no regression": (m["detection"]["map_no_regression"], outputs["detect"]["map_no_regression"]),
    }
    match = all(abs(a - b) < 1e-9 for a, b in pairs.values())
    for name, (a, b) in pairs.items():
        print(f"  {name:<28} demo {a:.4f}   command {b:.4f}")
    ratio = separate_total / demo_s
    print(f"demo {demo_s:.1f} s vs separate commands {separate_total:.1f} s: {ratio:.2f}x; metrics match: {match}")
    path = write_result(
        "demo",
        {
            "demo_wall_seconds": round(demo_s, 1),
            "demo_stage_seconds": {s["stage"]: s["seconds"] for s in demo["stages"]},
            "goal_seconds": 600,
            "separate_command_seconds": {k: round(v, 1) for k, v in separate.items()},
            "separate_total_seconds": round(separate_total, 1),
            "speedup_vs_separate": round(ratio, 3),
            "metrics": m,
            "metrics_match_commands": match,
            "pairs": {k: {"demo": a, "command": b} for k, (a, b) in pairs.items()},
            "config": cfg,
            "reproduce": "python benchmarks/demo.py",
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

import importlib
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from alexsuite import __version__
from alexsuite.cli.main import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_help_and_version_teach():
    result = run("--help")
    assert result.exit_code == 0 and "alexsuite train" in result.output
    assert __version__ in run("--version").output
    train_help = run("train", "--help").output
    assert "Examples:" in train_help and "torchrun" in train_help and "--resume" in train_help
    assert "--ten-crop" in run("eval", "--help").output
    assert "alexsuite demo" in result.output
    demo_help = run("demo", "--help").output
    assert "report.html" in demo_help and "Examples:" in demo_help
    from alexsuite.cli.main import COMMANDS

    for command in COMMANDS:
        text = run(command, "--help").output  # a manual: an example, and what it writes or prints
        assert "Examples:" in text and ("Writes" in text or "writes" in text or "Prints" in text), command


def test_the_command_list_loads_no_command_and_names_every_one():
    """`alexsuite --help` lists the commands from main.COMMANDS without importing their modules
    (torch with them); that table names each module that registers a command, under its name."""
    from alexsuite.cli.main import COMMANDS

    code = (
        "import sys; from alexsuite.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch loaded' if 'torch' in sys.modules else 'torch not loaded')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("torch not loaded") and all(name in out for name in COMMANDS)
    for path in Path(__file__).parents[2].joinpath("cli").glob("*.py"):  # every module, listed or not
        if not path.stem.startswith("__"):  # __main__ would run the CLI
            importlib.import_module(f"alexsuite.cli.{path.stem}")
    registered = {name: command.callback.__module__ for name, command in main.commands.items()}
    assert registered == {name: f"alexsuite.cli.{module}" for name, (module, _) in COMMANDS.items()}


def test_train_then_eval_json(shapes_dir, tmp_path):
    out = tmp_path / "run"
    result = run(
        "train", shapes_dir, "--epochs", "1", "--batch-size", "12", "--workers", "0", "--out", out, "--json", "-q"
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run_dir"] == str(out) and summary["epochs"] == 1
    result = run("eval", out, shapes_dir, "--json", "--workers", "0")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1 and metrics["images"] == 24
    ten = json.loads(run("eval", out / "best.pt", shapes_dir, "--ten-crop", "--json", "--workers", "0").stdout)
    assert ten["ten_crop"] is True and ten["images"] == 24
    # the ten crops include the centre one, scored on its own in the same pass
    assert (ten["centre_top1"], ten["centre_top5"]) == (metrics["top1"], metrics["top5"])


def test_alexnet_small_trains_at_a_larger_input_and_both_detection_modes_read_it(shapes_dir, tmp_path):
    """--input-size 40: the run stores images at 46 px and crops 40 (32/28 kept), keeps that
    size when resumed, and a 40 px crop is 10 conv5 cells, which fast mode's RoI pooling reads
    as the warp does. Sizes the net cannot take are refused in one line."""
    import torch

    from alexsuite.detection.framing import Framing
    from alexsuite.detection.regions import crop_shapes, fast_pool5, rcnn_pool5
    from alexsuite.models.checkpoint import load_model

    out = tmp_path / "run40"
    result = run(
        "train",
        shapes_dir,
        "--input-size",
        "40",
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--workers",
        "0",
        "--out",
        out,
        "--json",
        "-q",
    )
    assert result.exit_code == 0, result.output
    result = run("train", "--resume", out, "--epochs", "2", "--json", "-q")
    assert result.exit_code == 0 and json.loads(result.stdout)["epochs"] == 2, result.output
    loaded = load_model(out)
    pre, model = loaded.preprocess, loaded.model.eval()
    assert (pre.base_size, pre.crop_size) == (46, 40) and json.loads((out / "config.json").read_text())[
        "input_size"
    ] == 40
    assert crop_shapes(model, pre) == (10, model.pool5_dim)
    metrics = json.loads(run("eval", out, shapes_dir, "--json", "--workers", "0").stdout)
    assert metrics["images"] == 24
    image = torch.randint(0, 255, (3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    whole = torch.tensor([[0.0, 0.0, 40.0, 40.0]])  # the window is the image at level 0
    with torch.no_grad():
        a = rcnn_pool5(model, image, whole, pre, framing=Framing("warp", 0))
        b = fast_pool5(model, image, whole, pre, framing=Framing("warp", 0))
    assert torch.cosine_similarity(a, b).item() > 0.95
    for args in (("--input-size", "30"), ("--input-size", "68"), ("--arch", "alexnet", "--input-size", "40")):
        result = run("train", shapes_dir, "--epochs", "1", "--out", tmp_path / "refused", *args)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and "--input-size" in lines[0], (args, result.output)
        assert not (tmp_path / "refused" / "last.pt").exists()


def test_user_errors_are_one_line_and_exit_2(tmp_path, trained_run):
    cases = [
        ("train", tmp_path / "missing"),
        ("eval", tmp_path / "missing.pt"),
        ("train", "fashion-mnist-mini", "--arch", "alexnet-small", "--weights", tmp_path / "w.pt"),
        ("eval", trained_run, "fashion-mnist-mini"),  # classes do not match the checkpoint
        ("train", "--resume", trained_run / "best.pt"),  # weights only: nothing to resume
        ("eval", trained_run, "fashion-mnist-mini", "--split", "val"),
    ]
    for args in cases:
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        lines = [ln for ln in result.output.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
        assert "Traceback" not in result.output


def test_a_val_split_run_is_evaluated_on_its_hold_out_only(shapes_dir, tmp_path):
    folder = shapes_dir / "train"  # 3 classes x 24 images
    result = run(
        "train",
        folder,
        "--val-split",
        "0.25",
        "--epochs",
        "1",
        "--batch-size",
        "18",
        "--workers",
        "0",
        "--out",
        tmp_path / "r",
        "-q",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(run("eval", tmp_path / "r", folder, "--json", "--workers", "0").stdout)
    assert metrics["images"] == 18  # the 6-per-class hold-out, not all 72 images


def test_train_leaves_out_the_listed_images(shapes_dir, tmp_path):
    listing = tmp_path / "leave.json"
    listing.write_text(json.dumps([0, 1, str(sorted((shapes_dir / "train" / "square").iterdir())[0])]))
    result = run(
        "train",
        shapes_dir,
        "--epochs",
        "1",
        "--batch-size",
        "12",
        "--workers",
        "0",
        "--leave-out",
        listing,
        "--out",
        tmp_path / "r",
        "-q",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "config.json").read_text())["leave_out"] == str(listing.resolve())
    listing.write_text(json.dumps([0, 1, 2]))  # another list: resuming would train on other images
    result = run("train", "--resume", tmp_path / "r", "--epochs", "2", "--workers", "0", "-q")
    assert result.exit_code == 2 and "the list changed" in result.output
    listing.write_text(json.dumps([72]))  # 3 classes x 24 images: positions 0-71
    result = run(
        "train", shapes_dir, "--epochs", "1", "--workers", "0", "--leave-out", listing, "--out", tmp_path / "r2", "-q"
    )
    assert result.exit_code == 2 and "positions 0-71" in result.output and not (tmp_path / "r2").exists()

"""One home for every default: each command-line option with a default takes it, and its help,
from a settings dataclass field; saved settings with keys alexsuite does not know are refused in
one line naming them."""

import importlib
import json

import click
import pytest

from alexsuite.cli.main import COMMANDS, main
from alexsuite.cli.options import SettingOption
from alexsuite.errors import ConfigError
from alexsuite.settings import default_of, from_dict

# Where to write, not how to compute: the only options whose default is not a setting.
LOCATIONS = {("demo", "out")}


def commands():
    for name, (module, _) in COMMANDS.items():
        importlib.import_module(f"alexsuite.cli.{module}")
        yield name, main.commands[name]


@pytest.mark.parametrize("name,command", list(commands()))
def test_every_default_comes_from_a_settings_field(name, command):
    for param in command.params:
        if isinstance(param, SettingOption):
            expected = default_of(param.settings, param.field)
            if param.own_default:  # resolved by the command: its help must still give the setting's default
                assert f"[default: {expected}" in param.help, (name, param.name)
            elif param.inverted:  # --no-x: a plain flag whose value is inverted after parsing
                assert expected is True and param.default is False and param.callback, (name, param.name)
            else:
                assert param.default == expected, (name, param.name)
            assert param.help, (name, param.name)
        elif isinstance(param, click.Option) and (name, param.name) not in LOCATIONS:
            unset = type(param.default).__name__ == "Sentinel"  # click 8.3+: no default given
            assert unset or param.default in (None, False, ()) or param.name == "help", (
                f"{name} --{param.name}: default {param.default!r} belongs in a settings field"
            )


def test_a_flag_that_turns_a_setting_off_keeps_the_setting_on_by_default():
    from click.testing import CliRunner

    seen = {}

    @click.command()
    @__import__("alexsuite.cli.options", fromlist=["option"]).option(
        __import__("alexsuite.training.config", fromlist=["TrainConfig"]).TrainConfig,
        "pca_lighting",
        "--no-pca-lighting",
    )
    def cmd(pca_lighting):
        seen["value"] = pca_lighting

    CliRunner().invoke(cmd, [])
    assert seen["value"] is True
    CliRunner().invoke(cmd, ["--no-pca-lighting"])
    assert seen["value"] is False


def test_train_config_reads_back_and_refuses_unknown_keys():
    from alexsuite.training.config import TrainConfig

    cfg = TrainConfig(epochs=3, lr=0.02)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    text = json.dumps({**json.loads(cfg.to_json()), "learning_rate": 0.1, "zzz": 1})
    with pytest.raises(ConfigError, match="unknown setting.*learning_rate, zzz"):
        TrainConfig.from_json(text, "runs/x/last.pt: its config")


def test_nested_settings_come_back_as_dataclasses_and_are_checked_too():
    from dataclasses import asdict

    from alexsuite.detection.config import DetectorConfig
    from alexsuite.detection.finetune import FinetuneSettings
    from alexsuite.detection.framing import Framing

    cfg = DetectorConfig(
        data="voc", backbone="run", framing=Framing("warp+square", (16, 0)), finetune=FinetuneSettings(iterations=7)
    )
    saved = json.loads(json.dumps(asdict(cfg)))
    back = from_dict(DetectorConfig, saved, "detector.json: config")
    assert back == cfg and isinstance(back.finetune, FinetuneSettings) and back.framing.padding == (16, 0)
    saved["finetune"]["iters"] = 9
    with pytest.raises(ConfigError, match="detector.json: config: finetune: unknown setting.*iters"):
        from_dict(DetectorConfig, saved, "detector.json: config")


def test_a_saved_detector_with_an_unknown_setting_is_refused(trained_detector, tmp_path):
    import shutil

    from alexsuite.detection.detector import load_detector

    copy = tmp_path / "det"
    shutil.copytree(trained_detector, copy, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((copy / "detector.json").read_text())
    meta["config"]["proposals"]["quality"] = True
    (copy / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="proposals: unknown setting.*quality"):
        load_detector(copy)


def test_help_shows_each_settings_source():
    from click.testing import CliRunner

    text = CliRunner().invoke(main, ["train", "--help"], terminal_width=200).output
    assert "[source: AlexNet §5]" in text
    text = CliRunner().invoke(main, ["train-detector", "--help"], terminal_width=200).output
    assert "[source: rcnn_train.m]" in text and "[source: R-CNN appendix A]" in text

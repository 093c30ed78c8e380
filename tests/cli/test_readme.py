"""The README's commands are real: every `alexsuite ...` line in its code blocks names a command
that exists and only options that command has, and the README reads nothing from outside the
repository."""

import importlib
import re
import shlex
from pathlib import Path

import click

from alexsuite.cli.main import COMMANDS, main

README = Path(__file__).parents[2] / "README.md"


def readme_commands() -> list[list[str]]:
    """Each shell line of the README's code blocks that runs alexsuite, as words after `alexsuite`."""
    found, fence = [], None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            fence = None if fence is not None else line[3:].strip()
            continue
        if fence not in ("", "sh", "bash"):  # prose, or a ```python block
            continue
        words = shlex.split(line.split("  #")[0])
        for start in ("alexsuite", "alexsuite.cli"):
            if start in words:
                found.append(words[words.index(start) + 1 :])
    return found


def test_the_readme_shows_every_command():
    shown = {words[0] for words in readme_commands()}
    assert shown >= set(COMMANDS) - {"demo"}, set(COMMANDS) - shown  # demo runs through `make demo`


def test_every_readme_command_and_option_exists():
    for words in readme_commands():
        name = words[0]
        assert name in COMMANDS, f"README runs `alexsuite {name}`, which does not exist"
        importlib.import_module(f"alexsuite.cli.{COMMANDS[name][0]}")
        command = main.commands[name]
        flags = {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
        for word in words[1:]:
            if word.startswith("-") and not re.fullmatch(r"-[0-9.]+", word):  # not a negative number
                assert word in flags, f"README: `alexsuite {name}` has no option {word}"


def test_the_readme_needs_nothing_from_outside_the_repository():
    text = README.read_text()
    assert "../shared" not in text and len(text.splitlines()) <= 200

"""Every option of every command explains itself in ``--help``: a sentence, and its default."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from buildings.cli import main


def _commands(group: click.Group, prefix=()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands(main))


def _default_said(option: click.Option) -> bool:
    """A default the reader sees: shown by click, stated in the help, or there is none to show."""
    if option.is_flag or option.required or option.multiple or option.show_default:
        return True
    if "[default:" in (option.help or "") or "(default" in (option.help or ""):
        return True
    return option.default is None or type(option.default).__name__ == "Sentinel"  # no default: nothing to show


def test_every_command_is_walked():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"fit", "predict", "evaluate", "score", "data build", "data preview"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_of_every_option(path, command):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert (command.help or "").strip(), f"buildings {' '.join(path)} has no description"
    problems = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden or param.name == "help":
            continue
        if not (param.help or "").strip():
            problems.append(f"{param.opts[0]}: no help text")
        elif not _default_said(param):
            problems.append(f"{param.opts[0]}: default {param.default!r} not shown")
        else:
            assert param.opts[0] in result.output
    assert not problems, f"buildings {' '.join(path)}: " + "; ".join(problems)


def test_tune_threshold_does_not_take_the_threshold_it_finds():
    result = CliRunner().invoke(main, ["tune-threshold", "--help"])
    assert result.exit_code == 0 and "--threshold" not in result.output
    assert "--threshold" in CliRunner().invoke(main, ["predict", "--help"]).output


@pytest.mark.parametrize("command", ["predict", "evaluate", "tune", "tune-threshold", "serve"])
def test_checkpoint_help_says_an_exported_onnx_runs_too(command):
    # Every command that predicts takes a .keras model or the .onnx `buildings export` wrote.
    option = next(p for p in main.commands[command].params if p.name == "checkpoints")
    assert option.help.startswith("A checkpoint: a .keras model, or a .onnx file `buildings export` wrote")
    assert "--checkpoint MODEL" in CliRunner().invoke(main, [command, "--help"]).output

"""The shared options: declared once, present on every command that takes them, with the same meaning."""

import inspect
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from edgefuse.cli.commands import COMMANDS
from edgefuse.cli.main import app
from edgefuse.cli.options import contract_options, gate_options, option_group, source_options

runner = CliRunner()


def _options(command: str) -> set[str]:
    names = set()
    for line in runner.invoke(app, [command, "--help"], terminal_width=200).output.splitlines():
        for word in line.split():
            if word.startswith("--"):
                names.add(word.split("/")[0].rstrip(","))
    return names


def _flags(build) -> set[str]:
    return {"--" + p.name.replace("_", "-") for p in inspect.signature(build).parameters.values()}


@pytest.mark.parametrize("command,groups", [("export", [gate_options, source_options]),
                                            ("validate", [gate_options, contract_options]),
                                            ("analyze", [source_options])])
def test_option_groups_reach_every_command_that_takes_them(command, groups):
    have = _options(command)
    for g in groups:
        assert _flags(g) <= have, _flags(g) - have


def test_every_declared_command_is_registered():
    assert [c.name for c in app.registered_commands] == list(COMMANDS)


def test_a_group_builds_its_value_and_the_command_gets_it():
    seen = {}

    def build(size: Annotated[int, typer.Option()] = 3, name: Annotated[str, typer.Option()] = "x"):
        return (size, name)

    @option_group("pair", build)
    def cmd(first: Annotated[int, typer.Option()] = 1, pair: tuple = None):
        seen["args"] = (first, pair)

    a = typer.Typer()
    a.command()(cmd)
    a.command("other")(lambda: None)
    r = runner.invoke(a, ["cmd", "--first", "2", "--size", "5"])
    assert r.exit_code == 0, r.output
    assert seen["args"] == (2, (5, "x"))
    assert list(inspect.signature(cmd).parameters) == ["first", "size", "name"]


def test_a_group_refuses_a_clash_or_a_missing_slot():
    def build(first: Annotated[int, typer.Option()] = 3):
        return first

    with pytest.raises(TypeError, match="twice"):
        option_group("g", build)(lambda first=1, g=None: None)
    with pytest.raises(TypeError, match="no parameter"):
        option_group("g", build)(lambda other=1: None)

"""`reactkd --help` and every command's --help: each command has a one-line summary and every option a help
line (walked from the parser itself, so a new option without help fails here)."""

from __future__ import annotations

import argparse

import pytest

from reactkd.cli.main import COMMANDS, build_parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_a_help_line():
    missing = [f"{name} {'/'.join(action.option_strings) or action.dest}"
               for name, sub in subcommands(build_parser()).items() for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert not missing, f"options without help=: {missing}"


def test_top_level_help_lists_every_command_with_one_line(capsys):
    parser = build_parser()
    choices = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))._choices_actions
    summaries = {action.dest: action.help for action in choices}
    assert sorted(summaries) == sorted(COMMANDS) == sorted(subcommands(parser))
    assert all(summary and "\n" not in summary for summary in summaries.values())
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert all(f"    {name}" in text for name in COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_help_prints_and_exits_zero(command, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith(f"usage: reactkd {command}")

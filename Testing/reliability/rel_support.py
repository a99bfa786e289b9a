"""Helpers of the reliability tests: CLI refusal checks, file snapshots, hypothesis settings."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, settings

from tiny_training import CHILD_ENV, TINY_CONFIG  # noqa: F401  (re-exported for the reliability tests)


def fuzz_settings(examples: int = 30) -> settings:
    """`examples` per property in a normal run; the loaded profile's count under --hypothesis-profile."""
    chosen = settings.get_current_profile_name() != "default"
    return settings(deadline=None, suppress_health_check=[HealthCheck.too_slow],
                    **({} if chosen else {"max_examples": examples}))


def files_under(folder: Path) -> set[str]:
    """Relative paths of every file (hidden ones too) below `folder`."""
    return {str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file()}


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `reactkd` in-process; argparse refusals (SystemExit) count as their exit code."""
    from reactkd.cli.main import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str) -> str:
    """Exit code 2, exactly one line on stderr starting with `error: `, no traceback; returns the message."""
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]

"""`mamql --help` is a user's manual: every option explained with its default, every command with
examples that still parse (a renamed option breaks this test, not a reader's first try), and
`mamql --version`."""

import argparse
import importlib.metadata
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mamql.cli import build_parser, subparsers_of

ROOT = Path(__file__).resolve().parent.parent


def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """(the words that select it, parser) for the parser and every subcommand under it."""
    yield words, parser
    for name, _help, sub in subparsers_of(parser):
        yield from walk(sub, words + (name,))


def is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def examples(parser: argparse.ArgumentParser) -> list[str]:
    return [line.strip() for line in (parser.epilog or "").splitlines() if line.strip().startswith("mamql ")]


PARSERS = list(walk(build_parser()))
LEAVES = [(words, p) for words, p in PARSERS if is_leaf(p)]


def name(words: tuple[str, ...]) -> str:
    return " ".join(("mamql",) + words)


def test_the_tree_has_the_known_commands():
    """The walk sees nested subcommands (else the checks below would pass vacuously)."""
    leaves = {name(words) for words, _ in LEAVES}
    for command in ("mamql local", "mamql demos collect", "mamql dataset import", "mamql experts train",
                    "mamql envs play", "mamql config show"):
        assert command in leaves


@pytest.mark.parametrize("words,parser", PARSERS, ids=[name(w) for w, _ in PARSERS])
def test_every_option_and_subcommand_has_help(words, parser):
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            missing += [f"subcommand {c.dest}" for c in action._choices_actions if not (c.help or "").strip()]
            continue
        if not (action.help or "").strip():
            missing.append("/".join(action.option_strings) or action.dest)
    assert not missing, f"{name(words)}: no help for {missing}"


@pytest.mark.parametrize("words,parser", PARSERS, ids=[name(w) for w, _ in PARSERS])
def test_help_prints_no_empty_defaults(words, parser):
    text = parser.format_help()
    for noise in ("(default: None)", "(default: False)", "(default: [])", "(default: )"):
        assert noise not in text, f"{name(words)} --help shows {noise}"


@pytest.mark.parametrize("words,parser", LEAVES, ids=[name(w) for w, _ in LEAVES])
def test_every_command_has_examples_that_parse(words, parser, capsys):
    lines = examples(parser)
    assert lines, f"{name(words)}: its epilog has no `mamql ...` example"
    assert len(lines) <= 3, f"{name(words)}: {len(lines)} examples; keep 1-3"
    for line in lines:
        argv = shlex.split(line)[1:]
        assert tuple(argv[:len(words)]) == words, f"{name(words)} --help shows an example of another command: {line}"
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"example `{line}` does not parse ({exc.code}): {capsys.readouterr().err.strip()}")
        assert getattr(args, "func", None) is not None, line


def test_top_level_examples_parse():
    lines = examples(build_parser())
    assert lines
    for line in lines:
        assert build_parser().parse_args(shlex.split(line)[1:]).func is not None, line


def run_mamql(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mamql.cli", *argv], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_version_is_the_installed_distributions():
    expected = f"mamql {importlib.metadata.version('mamql')}"
    flag = run_mamql("--version")
    assert flag.returncode == 0, flag.stderr
    assert flag.stdout.strip() == expected
    command = run_mamql("version")
    assert command.returncode == 0, command.stderr
    assert command.stdout.strip() == expected


def test_local_help_shows_defaults_and_examples():
    proc = run_mamql("local", "--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # argparse wraps to the terminal width
    assert "seconds between status lines (default: 2.0)" in text
    assert "(default: 20000)" in text  # --expert-transitions
    assert "examples: mamql local --env gems --steps 300" in text


def test_help_imports_neither_torch_nor_grpc():
    """Every --help stays fast: command modules import torch and grpc in their handlers only."""
    code = ("import sys\nfrom mamql.cli import build_parser\n"
            "parsers = [build_parser()]\n"
            "while parsers:\n"
            "    p = parsers.pop()\n"
            "    p.format_help()\n"
            "    parsers += [s for a in p._actions if hasattr(a, 'choices') and isinstance(a.choices, dict)"
            " for s in a.choices.values()]\n"
            "print(sorted(m for m in ('torch', 'grpc') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"

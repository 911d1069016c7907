"""Every registered subcommand module imports and registers (the CLI skips broken ones at run time)."""

import argparse
import importlib

import pytest

from mamql.cli import COMMAND_MODULES


@pytest.mark.parametrize("name", COMMAND_MODULES)
def test_command_module_registers(name):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    before = set(sub.choices)
    importlib.import_module(name).register(sub)
    assert set(sub.choices) - before, f"{name} registered no subcommand"


def test_a_flag_beside_the_same_set_key_wins_and_says_so(caplog):
    from mamql.cli import config_from_args

    flags = {"steps": "learner.steps"}
    with caplog.at_level("WARNING", logger="mamql"):
        config = config_from_args(argparse.Namespace(config=None, overrides=["learner.steps=8000"], steps=3000), flags)
    assert config.learner.steps == 3000
    assert "--steps 3000 wins over --set learner.steps=8000" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="mamql"):
        config_from_args(argparse.Namespace(config=None, overrides=["learner.steps=3000"], steps=3000), flags)
        config_from_args(argparse.Namespace(config=None, overrides=["learner.lr=0.01"], steps=3000), flags)
    assert "wins over" not in caplog.text

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

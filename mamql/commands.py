"""Core subcommands: `mamql version` and `mamql config show`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    version = sub.add_parser("version", help="print the mamql version (the same as mamql --version)",
                             epilog="examples:\n  mamql version")
    version.set_defaults(func=_version)

    config = sub.add_parser("config", help="inspect configuration")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    show = config_sub.add_parser(
        "show", help="print the resolved config as YAML",
        description="The config a command would run with: the defaults, then --config FILE, then each --set.",
        epilog="examples:\n  mamql config show\n"
               "  mamql config show --config experiments/experts/gems.yaml --set learner.steps=500\n"
               "  mamql config show --explain")
    add_config_args(show)
    show.add_argument("--explain", action="store_true",
                      help="every field with its value, type and meaning (the text of docs/config.md)")
    show.set_defaults(func=_config_show)


def _version(args: argparse.Namespace) -> int:
    from mamql.cli import package_version

    print(f"mamql {package_version()}")
    return 0


def _config_show(args: argparse.Namespace) -> int:
    from mamql.cli import config_from_args
    from mamql.config import dump_config

    config = config_from_args(args)
    if args.explain:
        from mamql.docgen import explain_config

        print(explain_config(config))
        return 0
    print(dump_config(config), end="")
    return 0

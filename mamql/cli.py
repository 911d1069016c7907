"""The one console command, `mamql`, with a subcommand per job.

Each subcommand lives next to the code it drives, in a module with `register(subparsers)`; this file
only lists those modules. Command modules import heavy dependencies (torch, grpc) inside their
handlers so that `mamql --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import mamql

# Modules that register subcommands, in the order `mamql --help` lists them.
COMMAND_MODULES = [
    "mamql.commands",
    "envs.cli",
    "replay.cli",
    "actors.cli",
    "learner.cli",
    "learner.service_cli",
    "mamql.local",
    "actors.collect_cli",
    "replay.dataset_cli",
    "experiments.cli",
]


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The `--config FILE` and repeated `--set section.key=value` options every job accepts."""
    parser.add_argument("--config", default=None, help="YAML config file (sections: env, replay, ...)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set replay.capacity=10",
    )


def config_from_args(args: argparse.Namespace, flags: dict[str, str] | None = None):
    """The resolved config: defaults, --config file, --set overrides, then convenience flags.

    `flags` maps an argparse attribute to the config key it sets (e.g. {"env": "env.name"}); a flag
    left at None changes nothing, and a flag given wins over --set, as a user typing both expects.
    """
    from mamql.config import load_config, with_updates

    config = load_config(getattr(args, "config", None), getattr(args, "overrides", []))
    sections: dict[str, dict] = {}
    for attr, key in (flags or {}).items():
        value = getattr(args, attr, None)
        if value is not None:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
    return with_updates(config, **sections) if sections else config


def default_run_name(config, prefix: str) -> str:
    """run.name unless it is the default; else `<prefix>-<env>-<UTC time>` (one directory per run)."""
    import time

    if config.run.name != "default":
        return config.run.name
    return f"{prefix}-{config.env.name.replace('/', '-')}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamql", description=mamql.__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # one broken extra must not take every other command down
            print(f"mamql: commands from {name} unavailable: {exc}", file=sys.stderr)
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from mamql.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"mamql: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

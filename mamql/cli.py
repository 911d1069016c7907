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
    "mamql.envs.cli",
    "mamql.replay.cli",
    "mamql.actors.cli",
    "mamql.learner.cli",
    "mamql.learner.service_cli",
    "mamql.local",
    "mamql.actors.collect_cli",
    "mamql.replay.dataset_cli",
    "mamql.experiments.cli",
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
    """The resolved and validated config: defaults, --config file, --set overrides, then convenience flags.

    `flags` maps an argparse attribute to the config key it sets (e.g. {"env": "env.name"}); a flag
    left at None changes nothing, and a flag given wins over --set, as a user typing both expects.
    Every command resolves its config here first, so mamql.config.validate runs before anything starts.
    """
    import logging

    from mamql.config import load_config, parse_override, validate, with_updates

    overrides = list(getattr(args, "overrides", None) or [])
    config = load_config(getattr(args, "config", None), overrides)
    set_keys = {".".join(parse_override(o)[0]) for o in overrides}  # load_config has checked them
    sections: dict[str, dict] = {}
    for attr, key in (flags or {}).items():
        value = getattr(args, attr, None)
        if value is not None:
            section, name = key.split(".", 1)
            sections.setdefault(section, {})[name] = value
            was = getattr(getattr(config, section), name)
            if key in set_keys and was != value:
                logging.getLogger("mamql").warning("--%s %s wins over --set %s=%s", attr.replace("_", "-"), value, key, was)
    return validate(with_updates(config, **sections) if sections else config)


# Argument checks for every command, by attribute name, run before its handler: counts that must
# not be negative (or zero), and input paths that must hold what they claim to.
MIN_COUNTS = {"steps": 0, "transitions": 1, "episodes": 1, "expert_transitions": 1, "actors": 0,
              "num_envs": 1, "recovery_rows": 1, "recovery_states": 1, "held_out": 0}


def check_args(args: argparse.Namespace) -> None:
    """Raise InputError for a bad argument before the command creates a directory or a process."""
    from pathlib import Path

    from mamql.config import InputError

    for name, low in MIN_COUNTS.items():
        value = getattr(args, name, None)
        if isinstance(value, int) and value < low:
            raise InputError(f"--{name.replace('_', '-')} must be >= {low}, got {value}")
    env = getattr(args, "env", None)
    if isinstance(env, str):
        from mamql.envs.registry import canonical_name

        try:
            canonical_name(env)
        except KeyError as exc:
            raise InputError(f"--env: {exc.args[0]}") from None
        expert = getattr(args, "expert", None)
        runs_expert = not getattr(args, "demos", None) and getattr(args, "algo", None) != "soft-q"
        if isinstance(expert, str) and runs_expert:  # commands that run an expert (soft-q needs none)
            from mamql.envs.experts import check_expert

            check_expert(env, expert)  # a checkpoint:PATH expert is read and matched to the env here
    temperature = getattr(args, "temperature", None)
    if temperature is not None:
        if not temperature > 0:
            raise InputError(f"--temperature must be > 0, got {temperature}")
        expert = getattr(args, "expert", None)
        if isinstance(expert, str) and not expert.startswith("checkpoint:"):
            raise InputError(f"--temperature is the sampling temperature of a checkpoint:PATH expert, not of {expert!r}")
    if getattr(args, "demos", None):
        from mamql.learner.demos import check_demos

        check_demos(args.demos)
    checkpoint = getattr(args, "checkpoint", None)
    if checkpoint and not Path(checkpoint).is_file():
        raise InputError(f"checkpoint {checkpoint} does not exist")


def command_name(args: argparse.Namespace) -> str:
    """`train`, `demos collect`, ...: the words a user typed, for error lines."""
    words = [args.command]
    action = getattr(args, f"{args.command}_command", None)
    return " ".join(words + [action] if action else words)


def default_run_name(config, prefix: str) -> str:
    """run.name unless it is the default; else `<prefix>-<env>-<UTC time>-<random>`: runs started in
    the same second get different names (make_run_dir also creates the directory atomically)."""
    import secrets
    import time

    if config.run.name != "default":
        return config.run.name
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    env = config.env.name.replace("/", "-").replace(":", "-")  # module:Class specs too
    return f"{prefix}-{env}-{stamp}-{secrets.token_hex(3)}"


def make_run_dir(config, prefix: str, resume: bool = False):
    """(config with its run.name, the run directory). A new run gets a directory of its own, made
    with mkdir(exist_ok=False) so that two runs never share one: an existing directory is refused
    (InputError), a default name is drawn again. With `resume` the directory must already exist."""
    from pathlib import Path

    from mamql.config import InputError, with_updates

    root = Path(config.run.root)
    if resume:
        if config.run.name == "default":
            raise InputError("--resume needs the name of the run to continue (--run-name)")
        path = root / config.run.name
        if not path.is_dir():
            raise InputError(f"--resume: no run directory {path}")
        return config, path
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(8):
        name = default_run_name(config, prefix)
        path = root / name
        try:
            path.mkdir()
        except FileExistsError:
            if config.run.name == "default":
                continue
            raise InputError(f"run directory {path} already exists: choose another --run-name, "
                             "or add --resume to continue that run") from None
        return with_updates(config, run={"name": name}), path
    raise InputError(f"could not create a new run directory under {root}")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help; descriptions and epilogs keep their line breaks.

    A default that says nothing is left out: None (the config's value applies, which the help names),
    False (a flag), "" and [] (nothing given), and a help text that already names its default. In a
    description or epilog a line of prose is wrapped to the terminal, an indented line (an example
    command) is kept whole so that it can be copied.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        lines = []
        for line in text.splitlines():
            if not line or line[0].isspace():
                lines.append(indent + line)
            else:
                lines += textwrap.wrap(line, width, initial_indent=indent, subsequent_indent=indent,
                                       break_long_words=False, break_on_hyphens=False)
        return "\n".join(lines)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS:
            return text
        if isinstance(default, (str, list, tuple)) and not default:
            return text
        if "default" in text.lower() or isinstance(action, argparse._VersionAction):
            return text
        return super()._get_help_string(action)


def package_version() -> str:
    """The installed distribution's version; mamql.__version__ when run from a tree not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mamql")
    except PackageNotFoundError:
        return getattr(mamql, "__version__", "unknown")


def subparsers_of(parser: argparse.ArgumentParser):
    """(name, help, subparser) for each subcommand of `parser`, one level down."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name), sub


def finish_parsers(parser: argparse.ArgumentParser) -> None:
    """Give every (sub)parser the HelpFormatter, and a subcommand without a description its one-line
    help as one, so command modules only write help texts and epilogs."""
    parser.formatter_class = HelpFormatter
    for _name, text, sub in subparsers_of(parser):
        if sub.description is None and text:
            sub.description = text[:1].upper() + text[1:] + "."
        finish_parsers(sub)


EPILOG = """\
examples:
  mamql local --env gems --steps 300
  mamql evaluate --run runs/NAME
  mamql plot runs/NAME

`mamql COMMAND --help` prints a command's options, their defaults and examples"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mamql", description=mamql.__doc__, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"mamql {package_version()}",
                        help="print the mamql version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:  # one broken extra must not take every other command down
            print(f"mamql: commands from {name} unavailable: {exc}", file=sys.stderr)
            continue
        module.register(sub)
    finish_parsers(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mamql.supervisor import die_with_parent_from_env

    die_with_parent_from_env()  # a child of `mamql local`/`collect`: dies with it, even on kill -9
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from mamql.config import InputError

    try:
        check_args(args)
        return int(args.func(args) or 0)
    except InputError as exc:  # bad config, file, argument or port: one line, argparse style
        print(f"mamql {command_name(args)}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

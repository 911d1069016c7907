"""Typed configuration: one frozen dataclass per section, loaded from YAML, overridden by `--set`.

Every process reads the same file, so a run is described by one document (`mamql config show`
prints it resolved). Unknown keys and wrong types fail loudly at load time rather than at use.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml


class InputError(ValueError):
    """Bad user input (a config value, a file, a busy port): `mamql` prints it as one line
    `mamql <cmd>: error: ...` and exits 2, before the command has started anything."""


class ConfigError(InputError):
    """A configuration file or override that does not match the schema."""


@dataclass(frozen=True)
class TableConfig:
    """One replay table. Vocabulary follows Reverb (sampler, remover, rate limiter)."""

    name: str = "online"
    capacity: int = 100_000  # transitions; storage is preallocated at this size
    sampler: str = "uniform"  # uniform | fifo | lifo (most recent)
    remover: str = "fifo"
    min_size_to_sample: int = 1
    samples_per_insert: float = 0.0  # 0 = no ratio limit
    error_buffer: float = 0.0  # allowed deviation from samples_per_insert, in samples
    read_only: bool = False  # expert demonstrations: loaded once, never written by actors
    schema: dict = field(default_factory=dict)  # field -> [dtype, [dims]]; empty = fixed by the first insert


@dataclass(frozen=True)
class EnvConfig:
    # a built-in (`mamql envs list`), a `mamql.envs` entry-point name, or your own PettingZoo
    # ParallelEnv as `package.module:ClassOrFactory` (docs/environments.md)
    name: str = "gems"
    seed: int = 0
    # passed to the env's class or factory (envs.make), except max_episode_steps: N, which mamql
    # applies itself (truncate every episode after N steps, for envs without a limit of their own)
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ReplayConfig:
    host: str = "127.0.0.1"
    port: int = 7100  # 0 = pick a free port
    tables: tuple[TableConfig, ...] = (
        TableConfig(name="expert", capacity=50_000, read_only=True),
        # Replay ratio: each online transition is sampled ~8 times on average (the single-process
        # trainer's 256 sampled per 32 collected). Actors may run at most error_buffer /
        # samples_per_insert = 2,000 transitions ahead of that ratio, then their inserts block: on a
        # small CPU box this frees the cores for the learner, and the FIFO table stays fresh (low
        # policy lag) instead of filling with stale early rollouts.
        TableConfig(name="online", capacity=20_000, min_size_to_sample=2_000, samples_per_insert=8.0,
                    error_buffer=16_000.0),
    )
    capacity: int = 100_000  # default capacity for tables created without an explicit config
    max_message_mb: int = 64
    # Each long-lived stream (an actor's Insert, a learner's Sample) holds one worker thread: size
    # this above the number of actors + learners that connect (RPCs beyond 4x this are refused).
    max_workers: int = 64
    reject_nan: bool = True
    wait_timeout_s: float = 30.0  # upper bound on any rate-limiter wait
    checkpoint_dir: str = ""  # empty = run_dir/checkpoints/replay
    checkpoint_on_exit: bool = True


@dataclass(frozen=True)
class ActorConfig:
    num_envs: int = 8
    mode: str = "learned"  # learned | expert | random
    expert: str = "scripted"  # scripted | random | checkpoint:PATH (a learner checkpoint of this env)
    expert_temperature: float = 0.0  # checkpoint experts sample Boltzmann(Q/this); 0 = the checkpoint's learner.alpha
    epsilon: float = 0.0
    send_batch_size: int = 256  # transitions per Insert message
    send_queue_batches: int = 64  # bounded buffer while replay is slow or away
    table: str = "online"
    torch_threads: int = 1


@dataclass(frozen=True)
class LearnerConfig:
    # mamql | iqlma | bc learn from demonstrations; soft-q learns from the env's rewards (no demos)
    algo: str = "mamql"  # mamql | iqlma | bc | soft-q
    device: str = "auto"  # auto | cpu | cuda
    steps: int = 2_000
    batch_size: int = 256  # per agent, per source (expert and online)
    lr: float = 1e-3
    gamma: float = 0.99
    alpha: float = 1.0  # Boltzmann temperature of the loss; actors sample at it too (sent with the weights)
    weight_decay: float = -1.0  # < 0 = the env's default from the paper
    # critic architecture: default = conv trunk + MLP head for (C, H, W) planes, MLP for anything else;
    # mlp = flatten + MLP for any shape; linear = one Linear(obs -> actions) layer, a Q table on one-hot
    # observations (hidden must stay empty). learner.networks
    network: str = "default"  # default | mlp | linear
    hidden: tuple[int, ...] = ()  # MLP widths; () = the default widths for the observation shape
    # the reference code's objective (ma-mql `mamql_online`): value term on online rows, chi^2 on
    # expert rows only. IQ-Learn's `value` + chi^2 on policy samples halved Gems returns (docs/results.md)
    value_term: str = "online"  # online | value | expert | v0 (see learner.losses.mamql_loss)
    chi2_on_policy: bool = False
    augment: str = "none"  # none | symmetry (expert rows under the grid's 8 rotations/reflections; envs.symmetry)
    # > 0: V(s') from a Polyak-averaged target critic (tau per update); 0 = none (reference), except for
    # soft-q, which always has one: 0 there means learner.updater.SOFT_Q_TARGET_TAU (0.005)
    target_tau: float = 0.0
    chi2_alpha: float = 0.0  # alpha of the chi^2 regulariser (coef 1/(4 chi2_alpha)); <= 0 = the temperature alpha
    log_every: int = 50
    checkpoint_every: int = 500
    # single-process trainer (learner.trainer); the distributed learner reads the replay service instead
    expert_transitions: int = 20_000  # demos collected in-process when no --demos file is given
    seed_transitions: int = 4_096  # random-policy transitions put in the online table before training
    online_capacity: int = 20_000  # FIFO capacity of the trainer's in-process online table
    rollout_steps_per_update: int = 4  # vector-env steps (x actor.num_envs transitions) per iteration
    eval_every: int = 250  # iterations between evaluations (0 = only at the end)
    eval_episodes: int = 16  # episodes per evaluation and mode (greedy, sample)
    keep_checkpoints: int = 3  # newest learner checkpoints kept in runs/<name>/checkpoints
    torch_threads: int = 0  # 0 = cores left after actors
    torch_compile: bool = False  # torch.compile the critics' training forwards (first update compiles: slow)
    # learner.fast (issue #12): all agents' critics in ONE batched step when their shapes match
    # (falls back to the plain per-agent Updater otherwise). precision and cuda_graph act on CUDA.
    fast: bool = False
    precision: str = "fp32"  # fp32 | bf16 (autocast forward, fp32 master weights and loss)
    cuda_graph: bool = True  # capture the whole fast step in one CUDA graph (CUDA only)


@dataclass(frozen=True)
class WeightsConfig:
    host: str = "127.0.0.1"
    port: int = 7200
    publish_every: int = 10  # learner updates between versions
    dtype: str = "float32"  # float32 | bfloat16 | float16 on the wire
    max_message_mb: int = 64
    max_workers: int = 64  # one per subscribed actor, plus a few


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = pick a free port; processes report the one they bound
    enabled: bool = True


@dataclass(frozen=True)
class AuthConfig:
    token: str = ""  # shared secret sent as `authorization: Bearer <token>` metadata
    token_file: str = ""
    # false (the default): a service bound to a non-loopback address without a token refuses to start;
    # true: it starts anyway and logs a warning. Loopback addresses never need a token.
    insecure_no_auth: bool = False
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""  # set to require client certificates (mTLS)


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    root: str = "runs"
    seed: int = 0
    log_level: str = "INFO"


@dataclass(frozen=True)
class Config:
    env: EnvConfig = field(default_factory=EnvConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    actor: ActorConfig = field(default_factory=ActorConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    run: RunConfig = field(default_factory=RunConfig)


# --------------------------------------------------------------------------- building from data


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Coerce a YAML value to `hint` where lossless (int -> float, list -> tuple), else fail."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            try:
                return _check_type(value, arg, where)
            except ConfigError:
                pass
        raise ConfigError(f"{where}: {value!r} does not match {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {hint}")


def _build(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join((where + '.' if where else '') + k for k in unknown)}; "
            f"valid keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Plain YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """`section.key=value` -> (["section", "key"], parsed YAML value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    path, raw = text.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if len(keys) < 2:
        raise ConfigError(f"override {text!r} must name a section and a key (e.g. replay.capacity=10)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from None
    return keys, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file, then `--set` overrides, validated as a whole."""
    data: dict = to_dict(Config())
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: top level must be a mapping of sections")
        data = _merge(data, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for depth, key in enumerate(keys[:-1]):
            if key not in node:
                raise ConfigError(
                    f"override {text!r}: unknown key {'.'.join(keys[:depth + 1])}; valid keys: {', '.join(node)}"
                )
            if not isinstance(node[key], dict):
                raise ConfigError(f"override {text!r}: {key!r} is not a section")
            node = node[key]
        node[keys[-1]] = value
    return _build(Config, data)


# --------------------------------------------------------------------------- validation

ALGOS = ("mamql", "iqlma", "bc", "soft-q")  # learner.updater.ALGOS (not imported here: it pulls in torch)
ACTOR_MODES = ("learned", "expert", "random")
EXPERTS = ("scripted", "random")
NETWORKS = ("default", "mlp", "linear")  # learner.networks.NETWORKS


def validate(config: Config) -> Config:
    """Check what the schema's types cannot (names that must exist, counts, port ranges) and raise
    one ConfigError listing every problem. Commands call it on their resolved config (through
    mamql.cli.config_from_args) before they create a run directory or start a process, so a typo is
    one error line rather than a traceback from a child process minutes later."""
    import logging

    from mamql.envs.registry import canonical_name
    from mamql.replay.sampler import SAMPLERS

    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    learner, actor = config.learner, config.actor
    try:
        canonical_name(config.env.name)
    except KeyError as exc:
        problems.append(f"env.name: {exc.args[0]}")
    else:
        if actor.mode == "expert" and (actor.expert in EXPERTS or actor.expert.startswith("checkpoint:")):
            from mamql.envs.experts import NoExpertError, check_expert

            try:  # a checkpoint is only looked for here (no torch); commands that start actors load it
                check_expert(config.env.name, actor.expert, load=False)
            except NoExpertError as exc:
                problems.append(f"actor.expert: {exc}")
    need(learner.network in NETWORKS, f"learner.network must be one of {', '.join(NETWORKS)}, got {learner.network!r}")
    need(learner.network != "linear" or not learner.hidden,
         f"learner.network=linear has no hidden layers: leave learner.hidden empty, got {list(learner.hidden)}")
    need(learner.steps >= 0, f"learner.steps must be >= 0, got {learner.steps}")
    need(0.0 < learner.gamma <= 1.0, f"learner.gamma must be in (0, 1], got {learner.gamma}")
    need(learner.alpha > 0.0, f"learner.alpha must be > 0, got {learner.alpha}")
    need(learner.algo in ALGOS, f"learner.algo must be one of {', '.join(ALGOS)}, got {learner.algo!r}")
    need(learner.algo != "soft-q" or learner.augment == "none",
         f"learner.augment={learner.augment} transforms demonstrations; learner.algo=soft-q has none")
    need(0.0 <= learner.target_tau <= 1.0, f"learner.target_tau must be in [0, 1], got {learner.target_tau}")
    need(learner.batch_size >= 1, f"learner.batch_size must be >= 1, got {learner.batch_size}")
    need(learner.expert_transitions >= 1, f"learner.expert_transitions must be >= 1, got {learner.expert_transitions}")
    need(actor.num_envs >= 1, f"actor.num_envs must be >= 1, got {actor.num_envs}")
    need(actor.mode in ACTOR_MODES, f"actor.mode must be one of {', '.join(ACTOR_MODES)}, got {actor.mode!r}")
    need(actor.expert in EXPERTS or actor.expert.startswith("checkpoint:"),
         f"actor.expert must be one of {', '.join(EXPERTS)} or checkpoint:PATH, got {actor.expert!r}")
    need(actor.expert_temperature >= 0.0, f"actor.expert_temperature must be >= 0, got {actor.expert_temperature}")
    for section in ("replay", "weights", "metrics"):
        port = getattr(config, section).port
        need(0 <= port <= 65535, f"{section}.port must be 0 (any free port) to 65535, got {port}")
    for table in config.replay.tables:
        where = f"replay.tables[{table.name!r}]"
        need(table.capacity >= 1, f"{where}.capacity must be >= 1, got {table.capacity}")
        need(table.sampler in SAMPLERS, f"{where}.sampler must be one of {', '.join(SAMPLERS)}, got {table.sampler!r}")
    need(isinstance(logging.getLevelName(config.run.log_level.upper()), int),
         f"run.log_level must be DEBUG, INFO, WARNING or ERROR, got {config.run.log_level!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def with_updates(config: Config, **sections: Mapping[str, Any]) -> Config:
    """A copy with some section fields replaced, validated like a file (used by launchers)."""
    data = to_dict(config)
    for name, values in sections.items():
        data[name] = _merge(data[name], values)
    return _build(Config, data)

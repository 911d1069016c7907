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


# Every field carries an attribute docstring (the string literal under it): mamql.docgen reads them
# with ast for `mamql config show --explain` and docs/config.md, so the help lives next to the field.
# A default that is a sentinel (0, -1, "", () standing for "pick for me") says so in its docstring.


@dataclass(frozen=True)
class TableConfig:
    """One replay table, an entry of `replay.tables`. Vocabulary follows Reverb (sampler, remover, rate
    limiter); the rate limiter's formula is in replay/rate_limiter.py."""

    name: str = "online"
    """Table name. Actors insert into `actor.table` and the distributed learner samples its online data
    from that same table; `expert` holds demonstrations."""
    capacity: int = 100_000
    """Transitions held; storage is preallocated at this size (mamql_replay_table_bytes), and the oldest
    transitions are removed first when full."""
    sampler: str = "uniform"
    """uniform | fifo | lifo: which rows a sample returns. uniform: at random, with replacement; fifo: oldest
    first, each row once (a consumer queue, e.g. `mamql collect`); lifo: the most recent rows."""
    remover: str = "fifo"
    """Which rows go when the table is full. Only fifo exists; any other value is an error."""
    min_size_to_sample: int = 1
    """Samples wait until the table holds this many transitions (0 counts as 1)."""
    samples_per_insert: float = 0.0
    """Replay ratio: transitions sampled per transition inserted, enforced by blocking whichever side runs
    ahead. 0 (the default) = no ratio limit, only min_size_to_sample."""
    error_buffer: float = 0.0
    """How far, in sampled transitions, the ratio may drift before inserts or samples block; must be
    >= max(1, samples_per_insert) when samples_per_insert > 0. Ignored when samples_per_insert is 0."""
    read_only: bool = False
    """Refuse Inserts: for expert demonstrations, loaded once and never written by actors."""
    schema: dict = field(default_factory=dict)
    """Fields as `name: [dtype, [dims]]`, fixed when the table is created. Empty (the default) = fixed by
    the first insert."""


@dataclass(frozen=True)
class EnvConfig:
    """The environment every process builds: actors step it, the learner sizes its critics from it,
    demo collection and evaluation play it."""

    name: str = "gems"
    """A built-in (`mamql envs list`), a `mamql.envs` entry-point name, or your own PettingZoo ParallelEnv
    as `package.module:ClassOrFactory` (docs/environments.md)."""
    seed: int = 0
    """Seed of the environments: actor i seeds its envs with `seed + 100003 * i`, so actors differ and a
    dataset can name the seed each episode was played from."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments for the env's class or factory, except `max_episode_steps: N`, which mamql applies
    itself (every episode truncated after N steps, for envs without a limit of their own). Empty = none."""


@dataclass(frozen=True)
class ReplayConfig:
    """The replay service (`mamql replay`): tables of transitions that actors insert into and the learner
    samples from, over gRPC."""

    host: str = "127.0.0.1"
    """Address the gRPC server binds. A non-loopback address needs `auth.token` (or
    `auth.insecure_no_auth`)."""
    port: int = 7100
    """gRPC port; 0 = a free port, which the process reports (`mamql local` does this)."""
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
    """The tables the service creates at start (fields: `replay.tables[]` below). A list given here replaces
    the whole default list. The single-process trainer (`mamql train`) builds its own tables instead
    (`learner.online_capacity`)."""
    capacity: int = 100_000
    """Unused: no table is created outside `replay.tables`, which sets each table's capacity. Kept so that
    configs naming it still load."""
    max_message_mb: int = 64
    """Largest gRPC message, in MiB, that the replay server and its clients send or accept."""
    max_workers: int = 64
    """gRPC worker threads. Each long-lived stream (an actor's Insert, a learner's Sample) holds one: size
    this above the number of actors + learners that connect (RPCs beyond 4x this are refused)."""
    reject_nan: bool = True
    """Refuse inserts holding NaN or infinite values (one bad actor must not poison the learner)."""
    wait_timeout_s: float = 30.0
    """Upper bound, in seconds, on any rate-limiter wait: a longer wait ends in DEADLINE_EXCEEDED, never a
    hang. The learner's sample stream uses the same bound."""
    checkpoint_dir: str = ""
    """Where replay checkpoints go (and the root a client's Checkpoint RPC may write under). Empty = the run
    directory's `checkpoints/replay` (`<run.root>/<run.name>/checkpoints/replay`)."""
    checkpoint_on_exit: bool = True
    """Write a final checkpoint when the service stops (SIGTERM), so a restarted replay can restore it."""


@dataclass(frozen=True)
class ActorConfig:
    """An actor process (`mamql actor`): steps `num_envs` env copies with one batched policy and streams
    the transitions to replay."""

    num_envs: int = 8
    """Env copies per actor process, stepped as one vector env (one policy forward per step)."""
    mode: str = "learned"
    """learned | expert | random. learned: the Boltzmann policy of the learner's newest weights (uniform
    random until the first version arrives); expert: `actor.expert`; random: uniform random actions."""
    expert: str = "scripted"
    """The expert of `mode: expert`: scripted | random | checkpoint:PATH (a learner checkpoint of this env)."""
    expert_temperature: float = 0.0
    """Temperature a checkpoint expert samples Boltzmann(Q / this) at. 0 (the default) = the checkpoint's
    own learner.alpha."""
    epsilon: float = 0.0
    """Probability that an action is replaced by a uniform random one (learned and expert policies)."""
    send_batch_size: int = 256
    """Transitions per Insert message: the actor buffers env steps until it has this many."""
    send_ack_every: int = 1
    """The replay server acknowledges one Insert message in this many (an idle writer asks for the pending
    acks after 50 ms): fewer ack messages per transition. At-least-once delivery is unchanged: what is
    not acknowledged is resent after a reconnect."""
    send_queue_batches: int = 64
    """Batches buffered while replay is slow or away; when full the env loop waits
    (mamql_actor_send_blocked_seconds_total)."""
    table: str = "online"
    """Replay table the actors insert into, and the one the distributed learner samples online data from."""
    torch_threads: int = 1
    """Torch threads per actor process (values below 1 count as 1): many single-threaded actors use the
    cores better than a few multi-threaded ones."""


@dataclass(frozen=True)
class LearnerConfig:
    """The learner: the distributed `mamql learner` and the single-process trainer `mamql train` (the
    fields marked "trainer" apply to the latter only)."""

    algo: str = "mamql"
    """mamql | iqlma | iqlma-joint | bc | soft-q. mamql, the IQL-MA baselines and bc learn from demonstrations
    (`--demos`); soft-q learns from the env's rewards, without demonstrations. iqlma is the paper's IQL-MA
    (reference code `iql_ma`): each agent's critic takes the other agents' actions as input, trains on expert
    rows only (value_term and chi2_on_policy do not apply) and acts with those actions left out; iqlma-joint
    is a critic over the joint action with MAMQL's loss (algo iqlma before it took the reference's form)."""
    device: str = "auto"
    """auto | cpu | cuda. auto = cuda when torch sees a GPU, else cpu."""
    steps: int = 2_000
    """Learner updates to reach, counted across resumes. For `mamql learner` 0 = until stopped."""
    batch_size: int = 256
    """Rows per update, per agent and per source (expert and online)."""
    lr: float = 1e-3
    """Adam learning rate of each critic."""
    gamma: float = 0.99
    """Discount factor, in (0, 1]. A dataset may record the gamma it was collected for (`mamql collect
    --gamma`); the learner warns when this differs."""
    alpha: float = 1.0
    """Boltzmann temperature of the loss; learned actors sample at it too (sent with the weights)."""
    weight_decay: float = -1.0
    """Adam L2 weight decay. Any value < 0 (the default -1.0) = the paper's value for the env: 1e-5 for Gems,
    1e-4 for the others (learner.updater.PAPER_WEIGHT_DECAY)."""
    # the `hidden` and `network` docs name learner.networks' defaults; keep them in step with that module
    network: str = "default"
    """default | mlp | linear critic. default: a conv trunk + MLP head for (C, H, W) planes, an MLP for anything
    else; mlp: flatten + MLP for any shape; linear: one Linear(obs -> actions) layer, a Q table on one-hot
    observations (`hidden` must stay empty). learner.networks."""
    hidden: tuple[int, ...] = ()
    """MLP hidden widths, e.g. [256, 256]. Empty (the default) = the widths for the observation shape
    (learner.networks: IMAGE_HIDDEN (1024, 1024) after the conv trunk for planes, VECTOR_HIDDEN (256, 256)
    otherwise), except that `mamql local` with a CPU learner runs image critics with CPU_IMAGE_HIDDEN (256,)
    and writes that into the run's config.yaml."""
    value_term: str = "online"
    """online | value | expert | v0: the rows the loss's value term E[V(s) - gamma V(s')] averages over
    (learner.losses.mamql_loss). online is the reference code's objective (ma-mql `mamql_online`);
    IQ-Learn's `value` with chi2_on_policy halved Gems returns (docs/results.md)."""
    chi2_on_policy: bool = False
    """false: the chi^2 regulariser on expert rows only (the reference code); true: over all rows, online rows
    at the current policy's actions (IQ-Learn's `regularize`)."""
    augment: str = "none"
    """none | symmetry: symmetry trains on expert rows under the grid's 8 rotations/reflections (envs that
    declare symmetries; envs.symmetry). Not with soft-q, which has no demonstrations."""
    target_tau: float = 0.0
    """Polyak rate of a target critic for V(s'), per update. 0 (the default) = no target critic (the
    reference), except for soft-q, which always has one: 0 there means learner.updater.SOFT_Q_TARGET_TAU
    (0.005)."""
    chi2_alpha: float = 0.0
    """alpha of the chi^2 regulariser (coefficient 1 / (4 chi2_alpha)). <= 0 (the default 0) = the Boltzmann
    temperature `alpha`, as in the reference code."""
    log_every: int = 50
    """Updates between loss records: the mamql_learner_loss gauges and a metrics.jsonl row (the trainer also
    prints its progress then)."""
    checkpoint_every: int = 500
    """Updates between learner checkpoints; 0 = only the final one, when the run ends."""
    expert_transitions: int = 20_000
    """trainer: expert transitions collected in-process when no `--demos` file is given
    (`mamql train --expert-transitions`)."""
    seed_transitions: int = 4_096
    """trainer: random-policy transitions put in the online table before training starts."""
    online_capacity: int = 20_000
    """trainer: FIFO capacity of its in-process online table (the distributed learner uses `replay.tables`)."""
    rollout_steps_per_update: int = 4
    """trainer: vector-env steps (each `actor.num_envs` transitions) collected per update."""
    guide: str = ""
    """trainer, algo soft-q: an expert (`scripted`, `checkpoint:PATH`) that takes each agent's rollout
    action with probability `guide_probability`, falling linearly to 0 at `guide_updates`; it picks which
    soft equilibrium training finds (learner/guide.py), the loss never sees it. Empty (the default) = none."""
    guide_probability: float = 0.5
    """trainer: the guide's share of the rollout actions at update 0 (see `guide`)."""
    guide_updates: int = 0
    """trainer: updates after which rollouts are the learners' own policies only (see `guide`)."""
    eval_every: int = 250
    """trainer: updates between evaluations; 0 = only at the end."""
    eval_episodes: int = 16
    """trainer: episodes per evaluation and mode (greedy, sample)."""
    keep_checkpoints: int = 3
    """trainer: newest `learner_<step>.pt` checkpoints kept in the run's checkpoints/ (at least 1). The
    distributed learner keeps one, `latest.pt`."""
    torch_threads: int = 0
    """Torch threads of the learner process. 0 (the default) = every core: torch's own default for
    `mamql learner`, all cores this process may use for the trainer."""
    torch_compile: bool = False
    """torch.compile the critics' training forwards (the first update compiles: slow to start)."""
    fast: bool = False
    """Update all agents' critics in ONE batched step when their shapes match (learner.fast); falls back to
    the per-agent updater otherwise. `precision` and `cuda_graph` act on it, on CUDA."""
    precision: str = "fp32"
    """fp32 | bf16, with `fast`: bf16 runs the forward under autocast, with fp32 master weights and loss."""
    cuda_graph: bool = True
    """With `fast` on CUDA: capture the whole update step in one CUDA graph (fewer kernel launches)."""


@dataclass(frozen=True)
class WeightsConfig:
    """The learner's weight service: versioned policy weights that actors subscribe to."""

    host: str = "127.0.0.1"
    """Address the weight service binds. A non-loopback address needs `auth.token` (or
    `auth.insecure_no_auth`)."""
    port: int = 7200
    """gRPC port; 0 = a free port, which the process reports."""
    publish_every: int = 10
    """Learner updates between published weight versions (fewer = less traffic, more policy lag)."""
    dtype: str = "float32"
    """float32 | bfloat16 | float16: dtype of the weights on the wire (actors act in float32)."""
    max_message_mb: int = 64
    """Largest gRPC message, in MiB, that the weight service and its subscribers send or accept."""
    max_workers: int = 64
    """gRPC worker threads: one per subscribed actor, plus a few."""


@dataclass(frozen=True)
class MetricsConfig:
    """Each process's Prometheus /metrics endpoint (docs/metrics.md lists the metrics)."""

    host: str = "127.0.0.1"
    """Address the /metrics HTTP server binds (plain HTTP, no auth: keep it on an internal network)."""
    port: int = 0
    """/metrics port. 0 (the default) = a free port, which each process reports; deployments set it
    (9100 replay, 9200 learner, 9300+ actors)."""
    enabled: bool = True
    """Serve /metrics at all."""


@dataclass(frozen=True)
class AuthConfig:
    """Authentication of the gRPC services (replay, weights); grpc.health.v1 stays open for probes."""

    token: str = ""
    """Shared secret sent as `authorization: Bearer <token>` metadata. Empty = no token. Prefer token_file:
    a value here shows up in `config show` and in the run's config.yaml."""
    token_file: str = ""
    """File holding the token; when set it wins over `token`. Empty = none."""
    insecure_no_auth: bool = False
    """false (the default): a service bound to a non-loopback address without a token refuses to start;
    true: it starts anyway and logs a warning. Loopback addresses never need a token."""
    tls_cert: str = ""
    """PEM certificate a server presents; with `tls_ca` set, clients present theirs too (mTLS). With this
    and `tls_ca` both empty, gRPC runs in plaintext."""
    tls_key: str = ""
    """PEM private key of `tls_cert`."""
    tls_ca: str = ""
    """PEM CA certificate clients verify the server with (without one a client trusts `tls_cert` itself);
    set on a server, it requires client certificates (mTLS). Empty = none."""


@dataclass(frozen=True)
class RunConfig:
    """The run: its directory `<root>/<name>/` (config.yaml, metrics.jsonl, checkpoints/, logs/), seed and
    logging."""

    name: str = "default"
    """Run directory name under `root`. Left at "default", `mamql train`, `local`, `collect` and `experts
    train` pick a fresh `<command>-<env>-<UTC time>-<hex>` name; `mamql learner` and `replay` use it as is."""
    root: str = "runs"
    """Directory holding the run directories."""
    seed: int = 0
    """Seed of the learner (initial weights, sampling) and of in-process demo collection."""
    log_level: str = "INFO"
    """DEBUG | INFO | WARNING | ERROR."""


@dataclass(frozen=True)
class Config:
    """A whole run: every process reads the same document."""

    env: EnvConfig = field(default_factory=EnvConfig)
    """The environment."""
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    """The replay service and its tables."""
    actor: ActorConfig = field(default_factory=ActorConfig)
    """Actor processes."""
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    """The learner (distributed and single-process)."""
    weights: WeightsConfig = field(default_factory=WeightsConfig)
    """The learner's weight service."""
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    """Prometheus /metrics of each process."""
    auth: AuthConfig = field(default_factory=AuthConfig)
    """Token and TLS of the gRPC services."""
    run: RunConfig = field(default_factory=RunConfig)
    """Run directory, seed, logging."""


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

ALGOS = ("mamql", "iqlma", "iqlma-joint", "bc", "soft-q")  # learner.updater.ALGOS (not imported here: it pulls in torch)
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
    need(not learner.guide or learner.algo == "soft-q",
         f"learner.guide explores for forward soft-Q training (learner.algo=soft-q); "
         f"learner.algo={learner.algo} learns from demonstrations")
    need(0.0 <= learner.guide_probability <= 1.0,
         f"learner.guide_probability must be in [0, 1], got {learner.guide_probability}")
    need(not learner.guide or learner.guide_updates > 0,
         f"learner.guide={learner.guide!r} needs learner.guide_updates > 0 (the updates over which it fades out)")
    need(not learner.guide or learner.guide in EXPERTS or learner.guide.startswith("checkpoint:"),
         f"learner.guide must be one of {', '.join(EXPERTS)} or checkpoint:PATH, got {learner.guide!r}")
    need(0.0 <= learner.target_tau <= 1.0, f"learner.target_tau must be in [0, 1], got {learner.target_tau}")
    need(learner.batch_size >= 1, f"learner.batch_size must be >= 1, got {learner.batch_size}")
    need(learner.expert_transitions >= 1, f"learner.expert_transitions must be >= 1, got {learner.expert_transitions}")
    need(actor.num_envs >= 1, f"actor.num_envs must be >= 1, got {actor.num_envs}")
    need(actor.mode in ACTOR_MODES, f"actor.mode must be one of {', '.join(ACTOR_MODES)}, got {actor.mode!r}")
    need(actor.expert in EXPERTS or actor.expert.startswith("checkpoint:"),
         f"actor.expert must be one of {', '.join(EXPERTS)} or checkpoint:PATH, got {actor.expert!r}")
    need(actor.send_ack_every >= 1, f"actor.send_ack_every must be >= 1, got {actor.send_ack_every}")
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

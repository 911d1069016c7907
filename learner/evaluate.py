"""Evaluation: returns of the learned policies, and how well the recovered rewards match the true ones.

Returns: BoltzmannPolicy over the critics, greedy (argmax Q) or sampled (alpha), one episode per
vector-env copy so short episodes are not over-represented, fixed eval seeds (comparable across
checkpoints, disjoint from the training seeds).

Reward recovery (recovery_report, what `mamql evaluate` prints), per agent:
  pearson  THE figure: the shaping-invariant correlation of the critic's implied reward
           r^_i = Q_i(s, a_i) - gamma (1 - done) V_i(s') with the env's own reward (PettingZoo's
           rewards), learner.reward_compare's DARD canonical forms on successors drawn from the env's
           simulator (get_state/set_state, or a deep copy), over states the demonstrators visit and
           every action there; "distance" is sqrt((1 - pearson) / 2). Any env that restores a state
           gets it (every built-in one). One that cannot falls back to EPIC on the demo rows where
           the true reward is a function of the observations (Gems), else the figure is null with
           the reason. `reward_recovery_metric` says which was used and on what.
  raw      secondary, NOT shaping-invariant (a correct reward can score low): r^_i against the demos'
           `reward/<agent>` (or the env's reward function of (s, s'), Gems) on demo rows, Pearson and
           MSE after a least-squares affine map (learner.losses.affine_fit_metrics).
Yardsticks on the same sampled transitions (`reward_recovery_yardsticks`): the expert's own implied
reward (--expert-checkpoint; the ceiling), BC's log-policy (--bc-checkpoint: logits read as Q at
alpha 1, i.e. log pi_BC) and a freshly initialised critic of the evaluated architecture (seeded).
A joint-action critic (iqlma-joint) is scored by its marginal, as it acts; a critic conditioned on
the others' actions (iqlma) by the reward it was trained to imply, Q(s, a_i, a_-i) - gamma V(s', a'_-i),
with the others' sampled actions at s and the demonstrators' expectation over theirs at s' (it acts
without them, so that is the reward its policy follows only where the others' actions do not matter). reward_recovery() (raw, plus the
older Gems-only EPIC on demo rows) stays for training-time logs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from mamql.learner.losses import affine_fit_metrics, epic_canonical_correlation, recover_reward_from_q, soft_value
from mamql.learner.networks import JointCritic
from mamql.learner.policy import BoltzmannPolicy
from mamql.learner.updater import Updater, make_updater, read_checkpoint

EVAL_SEED = 1_000_003  # eval envs never share seeds with training envs


def config_from_extra(extra: Mapping[str, Any]):
    """The run's Config from a checkpoint's extra["config_json"]. Keys this version no longer knows
    (a checkpoint from an older mamql) are dropped with a warning rather than refusing the file."""
    import dataclasses
    import logging

    from mamql.config import Config, with_updates

    stored = json.loads(extra["config_json"])
    known = {f.name: {g.name for g in dataclasses.fields(f.type if isinstance(f.type, type) else type(getattr(Config(), f.name)))}
             for f in dataclasses.fields(Config)}
    sections = {}
    for name, values in stored.items():
        if name not in known:
            logging.getLogger("mamql.evaluate").warning("checkpoint config: ignoring unknown section %r", name)
            continue
        dropped = sorted(set(values) - known[name])
        if dropped:
            logging.getLogger("mamql.evaluate").warning("checkpoint config: ignoring unknown %s keys %s", name, dropped)
        sections[name] = {k: v for k, v in values.items() if k in known[name]}
    return with_updates(Config(), **sections)


def load_updater(path: str | Path, device: str = "cpu") -> tuple[Updater, dict]:
    """Rebuild the Updater a checkpoint came from (spec and config are stored in it). A file that is
    not such a checkpoint is a CheckpointError naming it (the CLI prints one line)."""
    from mamql.envs import env_spec
    from mamql.learner.checkpoint import CheckpointError

    ckpt = read_checkpoint(path)
    try:
        config = config_from_extra(ckpt["extra"])
        spec = env_spec(config.env.name, **config.env.kwargs)
        updater = make_updater(spec, config.learner, device)
        updater.load_state_dict(ckpt["updater"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:  # no config, or weights that do not fit it
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise CheckpointError(f"{path} is not a valid checkpoint: {reason}") from None
    return updater, dict(ckpt["extra"])


def run_checkpoint(run_dir: str | Path) -> Path:
    """The newest learner checkpoint of a run directory: `mamql local`'s checkpoints/learner/latest.pt,
    else `mamql train`'s newest checkpoints/learner_<step>.pt. None there is an InputError."""
    from mamql.config import InputError
    from mamql.learner.checkpoint import step_checkpoints

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"--run {run_dir}: no such run directory")
    local = run_dir / "checkpoints" / "learner" / "latest.pt"
    if local.is_file():
        return local
    trained = step_checkpoints(run_dir / "checkpoints")
    if trained:
        return trained[-1]
    raise InputError(f"--run {run_dir}: no learner checkpoint in {run_dir / 'checkpoints'} "
                     "(the learner writes one every learner.checkpoint_every updates and when it stops)")


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run directory a checkpoint lies in: its nearest ancestor with a config.yaml (runs/NAME
    for runs/NAME/checkpoints/learner/latest.pt and runs/NAME/checkpoints/learner_*.pt)."""
    for parent in Path(checkpoint).resolve().parents:
        if (parent / "config.yaml").is_file():
            return parent
    return None


def run_demos(run_dir: str | Path) -> Path | None:
    """The demos a run learned from: the file recorded in local.json (`mamql local` writes the path it
    was given, or collected into) or train.json (`mamql train --demos`), else the run's own demos.npz;
    None when there are none."""
    run_dir = Path(run_dir)
    for path in [recorded_demos(run_dir / "local.json"), recorded_demos(run_dir / "train.json"), run_dir / "demos.npz"]:
        if path is not None and path.exists():  # a .npz file or a dataset directory
            return path
    return None


def recorded_demos(record: Path) -> Path | None:
    """The "demos" path a run record (local.json, train.json) names, whether or not it still exists;
    None when the record is missing, unreadable or names none."""
    try:
        recorded = json.loads(record.read_text()).get("demos")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(recorded) if recorded else None


def load_expert_updater(path: str | Path, env_name: str) -> tuple[Updater, dict]:
    """(Updater, record) of an expert's checkpoint, for scoring its own implied reward
    r_E = Q_E(s, a_i) - gamma E[V_E(s')] (reward_recovery) next to a learned one: the yardstick. A
    checkpoint of another env is one InputError line; record = path, sha256, algo, step, alpha, gamma."""
    from mamql.learner.policy import CheckpointExpert

    record = CheckpointExpert(str(path), env_name).info()  # checks the env and the file first
    updater, _ = load_updater(path)
    return updater, {k: record[k] for k in ("checkpoint", "sha256", "algo", "step", "alpha", "gamma")}


def load_bc_updater(path: str | Path, env_name: str) -> tuple[Updater, dict]:
    """(Updater, record) of a BC checkpoint of env `env_name`, for the BC log-policy yardstick; another
    algo or env is one InputError line. record = checkpoint, sha256, algo, step."""
    import hashlib

    from mamql.config import InputError
    from mamql.envs.registry import canonical_name

    if not Path(path).is_file():
        raise InputError(f"--bc-checkpoint {path} does not exist")
    updater, extra = load_updater(path)
    trained_on = config_from_extra(extra).env.name
    if canonical_name(trained_on) != canonical_name(env_name):
        raise InputError(f"--bc-checkpoint {path} was trained on env {trained_on!r}, not {env_name!r}")
    if updater.algo != "bc":
        raise InputError(f"--bc-checkpoint {path} is a {updater.algo!r} checkpoint, not bc")
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return updater, {"checkpoint": str(path), "sha256": sha, "algo": updater.algo, "step": int(updater.step)}


def run_episodes(policy: Any, env_name: str, episodes: int, seed: int = EVAL_SEED,
                 env_kwargs: Mapping[str, Any] | None = None, max_envs: int = 32) -> dict[str, Any]:
    """Mean (and std) return per agent over `episodes` episodes: the first episode of each copy."""
    from mamql.envs.vector import VectorEnv

    returns: dict[str, list[float]] = {}
    lengths: list[int] = []
    done = 0
    while done < episodes:
        k = min(max_envs, episodes - done)
        env = VectorEnv(env_name, k, seed=seed + done, **dict(env_kwargs or {}))
        try:
            obs = env.reset()
            first = np.zeros(k, dtype=bool)
            start_ids = env.episode_id.copy()
            while not first.all():
                result = env.step(policy.act(obs))
                obs = result.obs
                for j, eid in enumerate(result.finished_ids):
                    slot = int(np.flatnonzero(start_ids == eid)[0]) if (start_ids == eid).any() else -1
                    if slot >= 0 and not first[slot]:
                        first[slot] = True
                        for a, r in result.episode_returns.items():
                            returns.setdefault(a, []).append(float(r[j]))
                        lengths.append(int(result.episode_lengths[j]))
        finally:
            env.close()
        done += k
    return {
        "mean_return": {a: float(np.mean(r)) for a, r in returns.items()},
        "std_return": {a: float(np.std(r)) for a, r in returns.items()},
        "mean_length": float(np.mean(lengths)),
        "episodes": len(lengths),
    }


def policy_from(source: Any, mode: str = "greedy", alpha: float | None = None, seed: int = EVAL_SEED) -> BoltzmannPolicy:
    """A CPU BoltzmannPolicy on a COPY of the updater's weights (training never sees eval mode)."""
    updater = load_updater(source)[0] if isinstance(source, (str, Path)) else source
    from mamql.learner.networks import build_algo_critics

    critics = build_algo_critics(updater.spec, updater.algo, tuple(updater.config.hidden) or None,
                                 getattr(updater.config, "network", "default"))
    policy = BoltzmannPolicy(critics, alpha=updater.alpha if alpha is None else alpha, mode=mode, seed=seed)
    policy.load_flat(updater.policy_weights())
    return policy


def evaluate(source: Any, env: str | None = None, episodes: int = 16, mode: str = "greedy",
             seed: int = EVAL_SEED, env_kwargs: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Mean return per agent of the learned policies. source: checkpoint path or Updater;
    env defaults to the updater's spec name (env_kwargs: pass the run's if any)."""
    updater = load_updater(source)[0] if isinstance(source, (str, Path)) else source
    policy = policy_from(updater, mode, seed=seed)
    return run_episodes(policy, env or updater.spec.name, episodes, seed, env_kwargs)["mean_return"]


# --------------------------------------------------------------------------- reward recovery


def gems_true_reward_from_planes(obs: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Gems' reward of the agent whose planes these are, as a function of (s, s') only: +1 for
    landing on an own-colour gem of s, +6 when both agents land on purple gems of s. Defined for
    ANY pair of states, which EPIC's canonicalisation needs."""
    n = obs.shape[0]
    flat, nxt = obs.reshape(n, 5, -1), next_obs.reshape(n, 5, -1)
    own, other = nxt[:, 0].argmax(1), nxt[:, 1].argmax(1)
    rows = np.arange(n)
    own_gem = flat[rows, 2, own].astype(np.float32)
    purple = (flat[rows, 4, own] > 0) & (flat[rows, 4, other] > 0)
    return own_gem + 6.0 * purple.astype(np.float32)


def true_rewards(env_name: str, demos: Mapping[str, np.ndarray], agent: str, rows: np.ndarray) -> torch.Tensor | None:
    """The true reward of `rows`: the demos' own `reward/<agent>` when they carry one (rewards are
    optional, evaluation-only fields), else the env's reward function where it is one of (s, s')
    (Gems), else None: recovery against it is then skipped, not guessed."""
    if f"reward/{agent}" in demos:
        return torch.as_tensor(demos[f"reward/{agent}"][rows]).float()
    if env_name == "gems":
        return torch.as_tensor(gems_true_reward_from_planes(demos[f"obs/{agent}"][rows], demos[f"next_obs/{agent}"][rows]))
    return None


@torch.no_grad()
def _critic_q(critic: torch.nn.Module, obs: np.ndarray, device: torch.device, chunk: int = 2048) -> torch.Tensor:
    outs = [critic(torch.as_tensor(obs[i:i + chunk], device=device)).float().cpu() for i in range(0, len(obs), chunk)]
    return torch.cat(outs)


@torch.no_grad()
def reward_recovery(updater: Updater, demos: Mapping[str, np.ndarray], max_rows: int = 4096,
                    epic_rows: int = 1024, epic_pool: int = 64, seed: int = 0,
                    keep_rows: int = 0) -> dict[str, dict[str, Any]]:
    """Per agent: {"raw": affine_fit_metrics(r^, r_true) on up to max_rows expert rows (None, with a
    "skipped" reason, when no true reward is known: see true_rewards),
    "epic_pearson": shaping-invariant correlation (Gems only, else None)}; with keep_rows > 0 also
    "r_hat" and "r_true", numpy arrays of the first keep_rows of those rows (for scatter plots)."""
    rng = np.random.default_rng(seed)
    n = len(demos["done"])
    rows = np.sort(rng.choice(n, size=min(n, max_rows), replace=False))
    done = torch.as_tensor(demos["done"][rows]).float()
    gems = updater.spec.name == "gems"
    out: dict[str, dict[str, Any]] = {}
    for agent, critic in updater.critics.items():
        critic.eval()
        if isinstance(critic, JointCritic):
            from mamql.learner.losses import joint_action_index

            acts = joint_action_index([torch.as_tensor(demos[f"action/{a}"][rows]) for a in updater.agents], updater.num_actions)
        else:
            acts = torch.as_tensor(demos[f"action/{agent}"][rows]).long()
        obs, nxt = demos[f"obs/{agent}"][rows], demos[f"next_obs/{agent}"][rows]
        q, q_next = _critic_q(critic, obs, updater.device), _critic_q(critic, nxt, updater.device)
        r_hat = recover_reward_from_q(q, q_next, acts, done, updater.gamma, updater.alpha)
        true = true_rewards(updater.spec.name, demos, agent, rows)
        result: dict[str, Any] = {"raw": None if true is None else affine_fit_metrics(r_hat, true), "epic_pearson": None}
        if true is None:
            result["skipped"] = (f"raw recovery skipped: the demos hold no reward/{agent} and env "
                                 f"{updater.spec.name!r} has no reward function of (s, s') to compute it")
        elif keep_rows:
            result["r_hat"], result["r_true"] = r_hat[:keep_rows].numpy(), true[:keep_rows].numpy()
        if gems:
            result["epic_pearson"] = _gems_epic(q, q_next, acts, obs, nxt, demos, done, updater, epic_rows, epic_pool, rng)
        critic.train()
        out[agent] = result
    return out


def _gems_epic(q, q_next, acts, obs, nxt, demos, done, updater, epic_rows, epic_pool, rng) -> float:
    """EPIC on non-terminal rows, with states passed as INDICES into precomputed tables so that the
    canonicalisation's big (s, A, S') product costs lookups, not critic forwards."""
    live = np.flatnonzero(done.numpy() == 0)
    live = np.sort(rng.choice(live, size=min(len(live), epic_rows), replace=False))
    pool = rng.choice(len(obs), size=min(len(obs), epic_pool), replace=False)
    states = np.concatenate([obs[live], nxt[live], obs[pool]])  # index space: [B | B | M]
    b = len(live)
    q_tab = torch.cat([q[live], q_next[live], q[pool]])
    v_tab = soft_value(q_tab, updater.alpha)
    gamma = updater.gamma
    flat = states.reshape(len(states), 5, -1)
    own_pos, other_pos = flat[:, 0].argmax(1), flat[:, 1].argmax(1)
    own_gem, purple = torch.as_tensor(flat[:, 2] > 0), torch.as_tensor(flat[:, 4] > 0)
    own_pos_t, other_pos_t = torch.as_tensor(own_pos), torch.as_tensor(other_pos)

    def learned(s, a, s2):
        return q_tab[s, a] - gamma * v_tab[s2]

    def true(s, a, s2):
        p0, p1 = own_pos_t[s2], other_pos_t[s2]
        return own_gem[s, p0].float() + 6.0 * (purple[s, p0] & purple[s, p1]).float()

    idx = torch.arange(b)
    action_pool = torch.arange(q.shape[1])
    return epic_canonical_correlation(learned, true, idx, acts[live], idx + b, torch.arange(2 * b, 2 * b + len(pool)),
                                      action_pool, gamma)


# --------------------------------------------------------------------------- shaping-invariant recovery

RECOVERY_SEED = 2_000_003  # coverage episodes and sampling: the same for every checkpoint of an env
RANDOM_CRITIC_SEED = 0  # the random-critic yardstick: one fixed initialisation per architecture
RECOVERY_METHODS = ("auto", "dard", "epic")


@contextlib.contextmanager
def _eval_mode(module: torch.nn.Module):
    """module.eval() for the block, then its training flag as it was."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def acting_q_function(updater: Any, agent: str):
    """agent's critic as reward_compare.QFunction: obs [B, ...] -> Q [B, A_i], as the agent acts
    (BoltzmannPolicy.action_values): a JointCritic by its marginal over its own action, a
    ConditionedCritic with the others' actions left out."""
    from mamql.learner.losses import marginalize_joint_q

    critic = updater.critics[agent]

    @torch.no_grad()
    def q_fn(obs: np.ndarray) -> np.ndarray:
        with _eval_mode(critic):
            q = critic(torch.as_tensor(np.asarray(obs), device=updater.device))
        if isinstance(critic, JointCritic):
            q = marginalize_joint_q(q, critic.num_actions_per_agent, critic.agent_index, updater.alpha)
        return q.float().cpu().numpy()

    return q_fn


def conditioned_q_function(updater: Any, agent: str):
    """A ConditionedCritic (iqlma) as the reward it was trained to imply, Q(s, a_i, a_-i) -
    gamma V(s', a'_-i): a QFunction of (obs [B, ...], the others' one-hots [B, D]) -> Q [B, A_i],
    with `others_num_actions`, which reward_compare feeds the others' sampled actions at s and the
    demonstrators' expectation over theirs at s'."""
    critic = updater.critics[agent]

    @torch.no_grad()
    def q_fn(obs: np.ndarray, others: np.ndarray) -> np.ndarray:
        with _eval_mode(critic):
            q = critic(torch.as_tensor(np.asarray(obs), device=updater.device),
                       torch.as_tensor(np.asarray(others), device=updater.device))
        return q.float().cpu().numpy()

    q_fn.others_num_actions = tuple(n for j, n in enumerate(critic.num_actions_per_agent) if j != critic.agent_index)
    return q_fn


def model_critics(updater: Any) -> dict[str, tuple[Any, float, float]]:
    """{agent: (q_fn, alpha, gamma)} of a checkpoint's critics for reward_compare: each implies its
    reward with its own discount. BC's logits are read at alpha 1, so its implied reward is log pi_BC
    up to shaping (cross-entropy trains softmax(logits))."""
    from mamql.learner.networks import ConditionedCritic

    alpha = 1.0 if updater.algo == "bc" else float(updater.alpha)
    return {agent: (conditioned_q_function(updater, agent) if isinstance(critic, ConditionedCritic)
                    else acting_q_function(updater, agent), alpha, float(updater.gamma))
            for agent, critic in updater.critics.items()}


def random_critic_updater(updater: Any, seed: int = RANDOM_CRITIC_SEED) -> Updater:
    """A freshly initialised Updater of the evaluated checkpoint's algo and architecture (seeded): the
    random-critic yardstick, what a recovered reward scores by chance."""
    with torch.random.fork_rng(devices=[]):  # Updater seeds torch's global generator: leave the caller's alone
        return make_updater(updater.spec, updater.config, "cpu", seed=seed)


def policy_probs(policy: Any, num_actions: Mapping[str, int], epsilon: float = 0.0):
    """reward_compare.Demonstrator of an expert policy: a BoltzmannPolicy's own probabilities (greedy:
    its argmax; sample: Boltzmann at its alpha; its epsilon mixed in), RandomPolicy uniform, any other
    (a scripted expert, built without epsilon) one-hot on its action; `epsilon` mixes in uniform ones."""
    from mamql.envs.experts import RandomPolicy
    from mamql.learner.losses import boltzmann_probs

    def probs(obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if isinstance(policy, RandomPolicy):
            out = {a: np.full((len(o), num_actions[a]), 1.0 / num_actions[a]) for a, o in obs.items()}
        elif isinstance(policy, BoltzmannPolicy):
            q = policy.action_values(obs)
            out = {a: (np.eye(num_actions[a])[v.argmax(1)] if policy.mode == "greedy"
                       else boltzmann_probs(torch.from_numpy(v).double(), policy.alpha).numpy()) for a, v in q.items()}
            out = {a: (1 - policy.epsilon) * p + policy.epsilon / num_actions[a] for a, p in out.items()}
        else:
            acts = policy.act(obs)
            out = {a: np.eye(num_actions[a])[np.asarray(acts[a])] for a in obs}
        return {a: (1 - epsilon) * p + epsilon / num_actions[a] for a, p in out.items()}

    return probs


def demonstrator_for(env_name: str, env_kwargs: Mapping[str, Any] | None, demos_meta: Mapping[str, Any] | None,
                     expert_checkpoint: str | Path | None = None, seed: int = RECOVERY_SEED):
    """(Demonstrator, record) of whoever played the demos, from their metadata: the scripted expert (at
    the recorded epsilon), random play, or the recorded checkpoint (same sha256) at its temperature and
    sampling mode. Failing that, --expert-checkpoint (sampling at its alpha), else uniform random
    play, and the record says so: the demonstrators set the coverage states and the other agents'
    actions of every agent's marginal game."""
    from mamql.envs import env_spec
    from mamql.envs.experts import make_expert

    kwargs = dict(env_kwargs or {})
    num_actions = dict(env_spec(env_name, **kwargs).num_actions)
    meta = dict(demos_meta or {})
    expert = meta.get("expert") if isinstance(meta.get("expert"), Mapping) else {}
    epsilon = float(meta.get("epsilon") or 0.0)
    kind, why = expert.get("kind"), None
    try:
        if kind in ("scripted", "random"):
            policy = make_expert(env_name, kind, seed=seed, epsilon=0.0, **kwargs)
            return policy_probs(policy, num_actions, epsilon), {"source": "demos", "kind": kind, "epsilon": epsilon}
        if kind == "checkpoint":
            from mamql.learner.policy import CheckpointExpert

            loaded = CheckpointExpert(str(expert.get("checkpoint")), env_name, kwargs)
            if expert.get("sha256") and expert["sha256"] != loaded.sha256:
                raise ValueError(f"{expert.get('checkpoint')} has changed since the demos were recorded (sha256)")
            mode = "greedy" if expert.get("sampling") == "greedy" else "sample"
            policy = loaded.policy(expert.get("alpha"), mode, seed=seed)
            return policy_probs(policy, num_actions, epsilon), {
                "source": "demos", "kind": "checkpoint", "checkpoint": loaded.path, "sha256": loaded.sha256,
                "alpha": policy.alpha, "sampling": mode, "epsilon": epsilon}
        why = ("the demos do not record which expert played them" if kind is None
               else f"the demos' expert kind {kind!r} cannot be rebuilt")
    except Exception as exc:  # noqa: BLE001 - a missing or changed file: say so and fall back
        why = f"cannot rebuild the demos' expert: {' '.join(str(exc).split())[:200]}"
    if expert_checkpoint is not None:
        policy = make_expert(env_name, f"checkpoint:{expert_checkpoint}", seed=seed, **kwargs)
        return policy_probs(policy, num_actions), {"source": "--expert-checkpoint", "kind": "checkpoint",
                                                   "checkpoint": str(expert_checkpoint), "alpha": policy.alpha,
                                                   "sampling": "sample", "note": why}
    policy = make_expert(env_name, "random", seed=seed, **kwargs)
    return policy_probs(policy, num_actions), {"source": "stand-in", "kind": "random", "note": why +
                                               "; uniform random play stands in for the demonstrators"}


def recovery_report(updater: Any, env_name: str, env_kwargs: Mapping[str, Any] | None,
                    demos: Mapping[str, np.ndarray] | None, demos_meta: Mapping[str, Any] | None = None,
                    expert: tuple[Any, dict] | None = None, bc: tuple[Any, dict] | None = None,
                    expert_checkpoint: str | Path | None = None, states: int = 256, raw_rows: int = 4096,
                    method: str = "auto", seed: int = RECOVERY_SEED) -> dict[str, Any]:
    """The reward-recovery part of `mamql evaluate`'s JSON:

    reward_recovery             {agent: {"pearson", "distance", "raw"}}: pearson/distance THE
                                shaping-invariant figure (DARD, or the EPIC fallback); raw the
                                secondary per-row fit on demo rows (NOT shaping-invariant), when demos
                                are given.
    reward_recovery_metric      which method, its simulator, coverage and demonstrators, mean_pearson.
    reward_recovery_yardsticks  expert_implied (with `expert`: (Updater, record) of
                                load_expert_updater), bc_log_policy (with `bc`: (Updater, record)),
                                random_critic: each {"agents": {agent: {pearson, distance}},
                                "mean_pearson", ...} or {"skipped": why}.
    expert_reward_recovery      with `expert`: its figures in reward_recovery's layout.

    All figures come from the SAME sampled transitions. method: auto (dard when the env restores a
    state, else epic where the true reward is a function of the observations (Gems), else none),
    dard or epic (forced; epic needs demos)."""
    from mamql.envs import make
    from mamql.learner.reward_compare import simulator_for

    if method not in RECOVERY_METHODS:
        raise ValueError(f"method must be one of {RECOVERY_METHODS}, got {method!r}")
    models: dict[str, Any] = {"method": updater}
    if expert is not None:
        models["expert_implied"] = expert[0]
    if bc is not None:
        models["bc_log_policy"] = bc[0]
    models["random_critic"] = random_critic_updater(updater)
    agents = list(updater.critics)
    metric: dict[str, Any] = {"method": None}
    figures: dict[str, dict[str, dict[str, float]]] = {}
    sim, how, env = None, "not tried (method epic)", None
    try:
        if method != "epic":
            env = make(env_name, **dict(env_kwargs or {}))
            sim, how = simulator_for(env, seed)
            if sim is None and method == "dard":
                metric["skipped"] = f"dard needs a simulator that restores a state: {how}"
        if sim is not None:
            figures, metric = _dard_figures(sim, env, env_name, env_kwargs, updater, models, demos_meta,
                                            expert_checkpoint, states, seed)
            metric["simulator"] = how
        elif method != "dard" and demos is not None and updater.spec.name == "gems":
            figures = {name: {a: {"pearson": _finite(r["epic_pearson"]), "distance": _distance(_finite(r["epic_pearson"]))}
                              for a, r in reward_recovery(u, demos, max_rows=raw_rows, seed=0).items()}
                       for name, u in models.items()}
            metric = {"method": "epic", "simulator": None, "why": how, "gamma": updater.gamma,
                      "about": "Pearson correlation of EPIC canonical forms (Gleave et al. 2021) on non-terminal demo "
                               "rows, with the true reward from the observation planes: shaping-invariant, but "
                               "queries transitions the env cannot make; distance = sqrt((1 - pearson) / 2)",
                      "coverage": {"demo_rows": "up to 1024 non-terminal", "state_pool": 64}}
        elif "skipped" not in metric:
            metric["skipped"] = ("no shaping-invariant figure: the env cannot restore a state "
                                 f"({how}) and its true reward is not a function of the observations")
    finally:
        if env is not None:
            env.close()
    metric["mean_pearson"] = _mean_pearson(figures.get("method", {}))
    raw = reward_recovery(updater, demos, max_rows=raw_rows) if demos is not None else {}
    out: dict[str, Any] = {"reward_recovery": {}, "reward_recovery_metric": metric}
    for agent in agents:
        fig = figures.get("method", {}).get(agent, {"pearson": None, "distance": None})
        out["reward_recovery"][agent] = {**fig, **_raw_part(raw.get(agent))}
    if demos is not None:
        out["reward_recovery_raw_note"] = ("raw: Pearson/MSE of r^ vs the demos' reward per row after an affine "
                                           "fit; NOT shaping-invariant, a secondary number")
    yard: dict[str, Any] = {}
    for name, what in (("expert_implied", "pass --expert-checkpoint (the demonstrators' checkpoint): the ceiling"),
                       ("bc_log_policy", "pass --bc-checkpoint (a BC checkpoint on the same demos)"),
                       ("random_critic", "")):
        if name in models and name in figures:
            yard[name] = {"agents": figures[name], "mean_pearson": _mean_pearson(figures[name])}
        else:
            yard[name] = {"skipped": what if name not in models else metric.get("skipped", "no figure")}
    if expert is not None:
        yard["expert_implied"]["checkpoint"] = expert[1]
        raw_e = reward_recovery(expert[0], demos, max_rows=raw_rows) if demos is not None else {}
        none = {"pearson": None, "distance": None}
        out["expert_reward_recovery"] = {a: {**figures.get("expert_implied", {}).get(a, none), **_raw_part(raw_e.get(a))}
                                         for a in agents}
    if bc is not None:
        yard["bc_log_policy"]["checkpoint"] = bc[1]
    yard["random_critic"]["seed"] = RANDOM_CRITIC_SEED
    out["reward_recovery_yardsticks"] = yard
    return out


def _dard_figures(sim: Any, env: Any, env_name: str, env_kwargs: Mapping[str, Any] | None, updater: Any,
                  models: Mapping[str, Any], demos_meta: Mapping[str, Any] | None, expert_checkpoint: Any,
                  states: int, seed: int) -> tuple[dict, dict]:
    """(figures {model: {agent: {pearson, distance}}}, metric record) of the DARD comparison."""
    from mamql.envs import make
    from mamql.learner.reward_compare import compare_rewards, coverage_states, sample_agent

    demonstrator, about = demonstrator_for(env_name, env_kwargs, demos_meta, expert_checkpoint, seed)
    coverage = coverage_states(sim, demonstrator, states, seed, max_steps=int(updater.spec.max_steps or 0),
                               make_env=lambda: make(env_name, **dict(env_kwargs or {})))
    num_actions = {a: int(updater.spec.num_actions[a]) for a in env.possible_agents}
    # a copying simulator (deepcopy mode, MPE) is ~10x dearer per restore: one own action per
    # successor for mean_A f(s', A), an unbiased but noisier estimate
    second = None if sim.mode == "get_state" else 1
    samples = {a: sample_agent(sim, coverage, demonstrator, a, num_actions, seed=seed + i, second_actions=second)
               for i, a in enumerate(updater.critics)}
    # the discount the demonstrators were trained for (the true reward is theirs under it), else the learner's
    gamma = float((demos_meta or {}).get("gamma") or updater.gamma)
    true = {a: s.true_canonical(gamma) for a, s in samples.items()}
    figures = compare_rewards(samples, {name: model_critics(u) for name, u in models.items()}, gamma)
    figures = {name: {a: {k: _finite(v) for k, v in fig.items()} for a, fig in per.items()}
               for name, per in figures.items()}
    metric = {
        "method": "dard", "gamma": gamma,
        "gamma_source": "the demos' (their expert's discount)" if (demos_meta or {}).get("gamma") else "the learner's",
        "reward_gammas": {name: float(u.gamma) for name, u in models.items()},
        "about": "Pearson correlation of DARD canonical forms (Wulfe et al. 2022) of the critic's implied "
                 "reward and the env's reward in each agent's marginal game: shaping- and scale-invariant, "
                 "1 = the same reward up to shaping; distance = sqrt((1 - pearson) / 2) (learner.reward_compare)",
        "coverage": {"states": {a: int(len(s.reward)) for a, s in samples.items()},
                     "dropped": {a: s.dropped for a, s in samples.items()}, "seed": seed,
                     "actions": "every action of the agent at each state",
                     # states where the agent's action changes the true canonical reward at all: a sparse
                     # reward leaves few, and the figure rests on them (null: none, no correlation)
                     "informative_states": {a: int((np.abs(c).max(1) > 1e-9).sum()) for a, c in true.items()},
                     "successor_actions": "all" if second is None else second},
        "demonstrators": about}
    return figures, metric


def _finite(x: float | None) -> float | None:
    """NaN (a constant reward has no correlation) as None, so the JSON stays valid."""
    return None if x is None or not np.isfinite(x) else float(x)


def _distance(rho: float | None) -> float | None:
    from mamql.learner.reward_compare import pearson_distance

    return None if rho is None else pearson_distance(rho)


def _mean_pearson(per_agent: Mapping[str, Mapping[str, float]]) -> float | None:
    vals = [v["pearson"] for v in per_agent.values() if v.get("pearson") is not None]
    return float(np.mean(vals)) if vals else None


def _raw_part(result: Mapping[str, Any] | None) -> dict[str, Any]:
    if result is None:
        return {}
    part = {"raw": result["raw"]}
    if "skipped" in result:
        part["raw_skipped"] = result["skipped"]
    return part

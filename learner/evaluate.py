"""Evaluation: returns of the learned policies, and how well the recovered rewards match the true ones.

Returns: BoltzmannPolicy over the critics, greedy (argmax Q) or sampled (alpha), one episode per
vector-env copy so short episodes are not over-represented, fixed eval seeds (comparable across
checkpoints, disjoint from the training seeds).

Reward recovery on expert data, per agent:
  raw      r^_i = Q_i(s, a_i) - gamma (1 - done) V_i(s') against the demos' `reward/<agent>` (or,
           for demos without rewards, the env's reward function where it has one; else skipped):
           Pearson correlation and MSE after a least-squares affine map (learner.losses.
           affine_fit_metrics). NOT shaping-invariant: a good reward can score low here.
  epic     Pearson correlation of the EPIC canonical forms (Gleave et al. 2021) of r^_i and the true
           reward on non-terminal expert transitions: invariant to potential-based shaping and to
           positive scale, the comparison inverse soft-Q learning can be judged by. Needs the true
           reward as a function of (s, a, s'); Gems has one (from the observation planes), other
           envs report None.
IQL-MA critics are compared on the joint action they were trained on; BC logits are treated as Q.
An expert's own checkpoint (load_expert_updater) is scored the same way: its implied reward is the
yardstick a recovered reward can be held to.
"""

from __future__ import annotations

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

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise InputError(f"--run {run_dir}: no such run directory")
    local = run_dir / "checkpoints" / "learner" / "latest.pt"
    if local.is_file():
        return local
    trained = sorted((run_dir / "checkpoints").glob("learner_*.pt"))
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
    was given, or collected into), else the run's own demos.npz; None when there are none."""
    run_dir = Path(run_dir)
    try:
        recorded = json.loads((run_dir / "local.json").read_text()).get("demos")
    except (OSError, ValueError, AttributeError):
        recorded = None
    for path in ([Path(recorded)] if recorded else []) + [run_dir / "demos.npz"]:
        if path.is_file():
            return path
    return None


def load_expert_updater(path: str | Path, env_name: str) -> tuple[Updater, dict]:
    """(Updater, record) of an expert's checkpoint, for scoring its own implied reward
    r_E = Q_E(s, a_i) - gamma E[V_E(s')] (reward_recovery) next to a learned one: the yardstick. A
    checkpoint of another env is one InputError line; record = path, sha256, algo, step, alpha, gamma."""
    from mamql.learner.policy import CheckpointExpert

    record = CheckpointExpert(str(path), env_name).info()  # checks the env and the file first
    updater, _ = load_updater(path)
    return updater, {k: record[k] for k in ("checkpoint", "sha256", "algo", "step", "alpha", "gamma")}


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
    from mamql.learner.networks import build_critics, build_joint_critics

    build = build_joint_critics if updater.algo == "iqlma" else build_critics
    critics = build(updater.spec, tuple(updater.config.hidden) or None, getattr(updater.config, "network", "default"))
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

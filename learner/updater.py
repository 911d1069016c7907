"""The learner's train step as an object: `Updater.update(expert, online)` is one MAMQL iteration.

The single-process trainer (learner.trainer) and the distributed learner service both drive it; it
knows nothing about replay, envs or processes. Batches are dicts of equal-length arrays with the
mamql.batch field names (`obs/<agent>`, `action/<agent>`, `next_obs/<agent>`, `done`, ...); numpy
or torch, any device; uint8 observations stay uint8 until they are on the device (4x less copying).

One iteration = for each agent, in a random order, one Adam step on that agent's critic. Every agent
sees the SAME joint transitions (one expert batch and one online batch per iteration) rather than a
fresh sample per agent as in the reference code: the critics are independent, so this changes
nothing in expectation, halves sampling and host-to-device traffic, and lets the trainer sample once.
Each critic runs ONE forward pass over all its rows (expert + online, s and s'), see
networks.forward_current_next; the loss itself is learner.losses.

Algorithms:
  mamql  per-agent marginal critics Q_i(s, a_i), mamql_loss.
  iqlma  the paper's IQL-MA baseline (ma-mql `iql_ma`): per-agent critics Q_i(s, a_-i, a_i) that take
         the others' actions as one-hot input, iqlma_loss on expert rows only (the online batch is
         ignored, as are value_term and chi2_on_policy); actors act with the others' actions left
         out (networks.ConditionedCritic), as the reference does.
  iqlma-joint  per-agent joint-action critics Q_i(s, a_1..a_n), iqlma_joint_loss (mamql_loss on the
         joint action, online value term); actors act by the marginal. Not the reference's form: kept
         as a second reading of "IQ-Learn per agent" (it was algo iqlma before).
  bc     per-agent logits trained by cross-entropy on expert actions; the online batch is ignored.
         The logits double as a critic so the same BoltzmannPolicy (alpha = 1) acts from them.
  soft-q forward soft-Q learning from each agent's own env reward (soft_q_loss) on online rows
         only (no demonstrations: `expert` may be None); trains soft-optimal experts. V(s') always
         comes from a Polyak-averaged target critic: learner.target_tau, or SOFT_Q_TARGET_TAU when 0.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from mamql.learner.losses import bc_loss, gather_actions, iqlma_joint_loss, iqlma_loss, mamql_loss, soft_q_loss
from mamql.learner.networks import build_algo_critics, checkpoint_algo, forward_current_next, others_one_hot
from mamql.learner.policy import flatten_weights

ALGOS = ("mamql", "iqlma", "iqlma-joint", "bc", "soft-q")
# soft-q's target-critic rate when learner.target_tau is 0: SAC's 0.005 (Haarnoja et al. 2018). A
# soft-Q regression bootstrapping from the critic it trains chases its own target and can diverge;
# at 0.005 the target's time constant is 200 updates, short next to a run of thousands.
SOFT_Q_TARGET_TAU = 0.005
# L2 weight decay from the paper per env (Gems 1e-5; Overcooked/kitchen and the rest 1e-4).
PAPER_WEIGHT_DECAY = {"gems": 1e-5}
DEFAULT_WEIGHT_DECAY = 1e-4
CHECKPOINT_FORMAT = 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` (or None) -> cuda when available, else cpu."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_weight_decay(env_name: str) -> float:
    return PAPER_WEIGHT_DECAY.get(env_name, DEFAULT_WEIGHT_DECAY)


def chi2_alpha_of(config: Any) -> float | None:
    """learner.chi2_alpha, where <= 0 means "tie it to the Boltzmann temperature" (the reference code)."""
    value = float(getattr(config, "chi2_alpha", 0.0))
    return value if value > 0 else None


def set_torch_threads(n: int) -> None:
    """0 = every core this process may use."""
    if int(n) <= 0:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(n)))


class Updater:
    """Per-agent critics, their Adam optimizers, the update counter and the agent-order rng."""

    def __init__(self, spec: Any, config: Any, device: str | torch.device | None = None, seed: int = 0):
        algo = config.algo
        if algo not in ALGOS:
            raise ValueError(f"algo must be one of {ALGOS}, got {algo!r}")
        self.spec, self.config, self.algo = spec, config, algo
        self.agents: list[str] = list(spec.agents)
        self.num_actions = [int(spec.num_actions[a]) for a in self.agents]
        self.device = resolve_device(device if device is not None else config.device)
        self.gamma, self.alpha = float(config.gamma), float(config.alpha)
        wd = float(config.weight_decay)
        self.weight_decay = default_weight_decay(spec.name) if wd < 0 else wd
        torch.manual_seed(seed)  # initial weights are a function of the seed
        critics = build_algo_critics(spec, algo, tuple(config.hidden) or None, getattr(config, "network", "default"))
        self.critics: dict[str, nn.Module] = {a: m.to(self.device) for a, m in critics.items()}
        # learner.torch_compile: training forwards go through torch.compile'd views of the critics; they
        # share the parameters, so checkpoints, weight publishing and evaluation use the plain modules
        compile_ = bool(getattr(config, "torch_compile", False))
        self.forwards: dict[str, Any] = {a: torch.compile(m) if compile_ else m for a, m in self.critics.items()}
        self.optimizers = {
            a: torch.optim.Adam(m.parameters(), lr=float(config.lr), weight_decay=self.weight_decay)
            for a, m in self.critics.items()
        }
        self.rng = torch.Generator().manual_seed(int(seed))  # agent order; CPU, so it checkpoints
        self.step = 0
        self.h2d_seconds = 0.0  # host time the latest update() spent moving its batches to the device
        self.perms: Tensor | None = None  # learner.augment=symmetry: action permutations [8, A]
        augment = getattr(config, "augment", "none")
        if augment != "none" and algo == "soft-q":
            raise ValueError("learner.augment transforms demonstrations; algo soft-q has none (set learner.augment=none)")
        if augment == "symmetry":
            from mamql.envs.symmetry import env_symmetries

            perms = env_symmetries(spec.name)
            if perms is None:
                raise ValueError(f"learner.augment=symmetry: env {spec.name!r} declares no symmetries")
            self.perms = torch.as_tensor(perms, device=self.device)
        elif augment != "none":
            raise ValueError(f"learner.augment must be 'none' or 'symmetry', got {augment!r}")
        # optional target critics for V(s') (learner.target_tau > 0): the bootstrap target then moves
        # slowly instead of with every step, the usual cure for a soft-Q critic that drifts late in training
        self.target_tau = float(getattr(config, "target_tau", 0.0))
        if algo == "soft-q" and self.target_tau <= 0:
            self.target_tau = SOFT_Q_TARGET_TAU
        self.targets: dict[str, nn.Module] = {}
        if self.target_tau > 0 and algo != "bc":
            for a, m in self.critics.items():
                self.targets[a] = copy.deepcopy(m).requires_grad_(False)

    # ------------------------------------------------------------------ the train step
    def _tensor(self, x: np.ndarray | Tensor, dtype: torch.dtype | None = None) -> Tensor:
        t = torch.as_tensor(x).to(self.device, non_blocking=True)
        return t if dtype is None else t.to(dtype)

    def _on_device(self, batch: Mapping[str, np.ndarray | Tensor] | None) -> dict | None:
        """The fields an update reads, as tensors on the device (in their own dtype: uint8 stays
        uint8), the rest as they were; done once per batch, so the copy time is measurable apart
        from the update (h2d_seconds). A tensor already there is not copied."""
        if batch is None:
            return None
        read = ("obs/", "next_obs/", "action/", "reward/") if self.algo == "soft-q" else ("obs/", "next_obs/", "action/")
        return {k: self._tensor(v) if k == "done" or k.startswith(read) else v for k, v in batch.items()}

    def update(self, expert: Mapping[str, np.ndarray | Tensor] | None,
               online: Mapping[str, np.ndarray | Tensor]) -> dict[str, float]:
        """One iteration: one Adam step per agent (random order). Returns "<agent>/<term>" floats.
        soft-q reads only `online` (with `reward/<agent>`); `expert` may be None there."""
        started = time.perf_counter()
        expert = self._on_device(expert) if self.algo != "soft-q" else expert
        online = self._on_device(online) if self.algo not in ("bc", "iqlma") else online  # expert rows only
        self.h2d_seconds = time.perf_counter() - started
        if self.algo == "soft-q":
            return self._update_soft_q(online)
        if self.perms is not None:
            expert = self._augmented(expert)
        if self.algo == "bc":
            return self._update_bc(expert)
        if self.algo == "iqlma":
            return self._update_iqlma(expert)
        n_exp = len(expert["done"])
        n_all = n_exp + len(online["done"])
        cat = lambda k, dtype=None: torch.cat([self._tensor(expert[k], dtype), self._tensor(online[k], dtype)])
        done = cat("done", torch.float32)  # the TERMINAL flag only; truncation bootstraps
        is_expert = torch.zeros(n_all, device=self.device)
        is_expert[:n_exp] = 1.0
        actions = {a: cat(f"action/{a}", torch.long) for a in self.agents}
        kwargs = dict(gamma=self.gamma, alpha=self.alpha, value_term=self.config.value_term,
                      chi2_on_policy=self.config.chi2_on_policy, chi2_alpha=chi2_alpha_of(self.config))
        logs: dict[str, float] = {}
        for i in torch.randperm(len(self.agents), generator=self.rng).tolist():
            agent = self.agents[i]
            forward = self.forwards[agent]
            if agent in self.targets:
                q = forward(cat(f"obs/{agent}"))
                with torch.no_grad():
                    q_next = self.targets[agent](cat(f"next_obs/{agent}"))
            else:
                q, q_next = forward_current_next(forward, cat(f"obs/{agent}"), cat(f"next_obs/{agent}"))
            if self.algo == "mamql":
                loss, terms = mamql_loss(q, q_next, actions[agent], done, is_expert, **kwargs)
            else:
                joint = torch.stack([actions[a] for a in self.agents], dim=-1)
                loss, terms = iqlma_joint_loss(q, q_next, joint, self.num_actions, done, is_expert, **kwargs)
            self._step_agent(agent, loss, terms, logs)
        self.step += 1
        return logs

    def _step_agent(self, agent: str, loss: Tensor, terms: Mapping[str, Tensor], logs: dict[str, float]) -> None:
        """One optimiser step of the agent's critic on `loss`, its target's Polyak step, its terms logged."""
        opt = self.optimizers[agent]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        self._track_target(agent)
        logs.update({f"{agent}/{k}": float(v) for k, v in terms.items()})

    def _track_target(self, agent: str) -> None:
        """Polyak step of the agent's target critic towards its critic (when it has one)."""
        if agent in self.targets:
            with torch.no_grad():
                for t, p in zip(self.targets[agent].parameters(), self.critics[agent].parameters()):
                    t.lerp_(p, self.target_tau)

    def _update_iqlma(self, expert: Mapping[str, np.ndarray | Tensor]) -> dict[str, float]:
        """IQL-MA: each agent's critic at (s, a_-i) and (s', a_-i), the others' expert actions as
        one-hot input, iqlma_loss; V(s') from the target critic when learner.target_tau > 0."""
        done = self._tensor(expert["done"], torch.float32)  # the TERMINAL flag only; truncation bootstraps
        joint = torch.stack([self._tensor(expert[f"action/{a}"], torch.long) for a in self.agents], dim=-1)
        logs: dict[str, float] = {}
        for i in torch.randperm(len(self.agents), generator=self.rng).tolist():
            agent = self.agents[i]
            others = others_one_hot(joint, self.num_actions, i)
            obs, next_obs = self._tensor(expert[f"obs/{agent}"]), self._tensor(expert[f"next_obs/{agent}"])
            if agent in self.targets:
                q = self.forwards[agent](obs, others)
                with torch.no_grad():
                    q_next = self.targets[agent](next_obs, others)
            else:
                q, q_next = forward_current_next(self.forwards[agent], obs, next_obs, others)
            loss, terms = iqlma_loss(q, q_next, joint[:, i], done, gamma=self.gamma, alpha=self.alpha,
                                     chi2_alpha=chi2_alpha_of(self.config))
            self._step_agent(agent, loss, terms, logs)
        self.step += 1
        return logs

    def _update_soft_q(self, online: Mapping[str, np.ndarray | Tensor]) -> dict[str, float]:
        done = self._tensor(online["done"], torch.float32)  # the TERMINAL flag only; truncation bootstraps
        logs: dict[str, float] = {}
        for i in torch.randperm(len(self.agents), generator=self.rng).tolist():
            agent = self.agents[i]
            q = self.forwards[agent](self._tensor(online[f"obs/{agent}"]))
            with torch.no_grad():
                q_next = self.targets[agent](self._tensor(online[f"next_obs/{agent}"]))
            loss, terms = soft_q_loss(q, q_next, self._tensor(online[f"action/{agent}"], torch.long),
                                      self._tensor(online[f"reward/{agent}"], torch.float32), done,
                                      gamma=self.gamma, alpha=self.alpha)
            self._step_agent(agent, loss, terms, logs)
        self.step += 1
        return logs

    def _augmented(self, expert: Mapping[str, np.ndarray | Tensor]) -> dict[str, Tensor]:
        """The expert rows, each under one of the grid's 8 symmetries drawn from self.rng (so a
        resumed run draws the same ones)."""
        from mamql.envs.symmetry import TRANSFORMS, augment_batch

        fields = ("obs", "action") if self.algo == "bc" else ("obs", "next_obs", "action")  # BC reads no next_obs
        keys = [f"{k}/{a}" for a in self.agents for k in fields]
        batch = {k: self._tensor(expert[k]) for k in keys}
        choice = torch.randint(0, len(TRANSFORMS), (len(expert["done"]),), generator=self.rng).to(self.device)
        return {**expert, **augment_batch(batch, self.agents, self.perms, choice)}

    def _update_bc(self, expert: Mapping[str, np.ndarray | Tensor]) -> dict[str, float]:
        logs: dict[str, float] = {}
        for i in torch.randperm(len(self.agents), generator=self.rng).tolist():
            agent = self.agents[i]
            opt = self.optimizers[agent]
            logits = self.forwards[agent](self._tensor(expert[f"obs/{agent}"]))
            actions = self._tensor(expert[f"action/{agent}"], torch.long)
            loss = bc_loss(logits, actions)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                acc = (logits.argmax(-1) == actions).float().mean()
                expert_q = gather_actions(logits, actions).mean()
            logs.update({f"{agent}/loss": float(loss.detach()), f"{agent}/accuracy": float(acc), f"{agent}/expert_q": float(expert_q)})
        self.step += 1
        return logs

    # ------------------------------------------------------------------ weights and state
    def policy_weights(self) -> dict[str, Tensor]:
        """Flat `<agent>/<param>` CPU tensors, what actors' BoltzmannPolicy.load_flat takes."""
        return flatten_weights(self.critics)

    def state_dict(self) -> dict:
        """Everything an exact resume needs: critics, optimizer moments, step, agent-order rng."""
        return {
            "format": CHECKPOINT_FORMAT,
            "algo": self.algo,
            "step": self.step,
            "critics": {a: {k: v.detach().cpu() for k, v in m.state_dict().items()} for a, m in self.critics.items()},
            "optimizers": {a: _to_cpu(o.state_dict()) for a, o in self.optimizers.items()},
            "rng": self.rng.get_state(),
            **({"targets": {a: _to_cpu(m.state_dict()) for a, m in self.targets.items()}} if self.targets else {}),
        }

    def load_state_dict(self, state: Mapping) -> None:
        algo = state.get("algo")
        if algo == "iqlma" and isinstance(state.get("critics"), Mapping) and state["critics"]:
            algo = checkpoint_algo(algo, next(iter(state["critics"].values())))
        if algo != self.algo:
            hint = (" (joint-action critics, which algo iqlma trained before it became the reference's form: "
                    "load them with learner.algo=iqlma-joint)" if algo == "iqlma-joint" and self.algo == "iqlma" else "")
            raise ValueError(f"checkpoint is for algo {algo!r}, this updater runs {self.algo!r}{hint}")
        for a, m in self.critics.items():
            m.load_state_dict(state["critics"][a], strict=True)
        for a, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][a])  # moves moments to the params' device
        self.rng.set_state(state["rng"])
        self.step = int(state["step"])
        for a, m in self.targets.items():  # a checkpoint without targets (older, or tau was 0): start from the critic
            m.load_state_dict(state.get("targets", {}).get(a, self.critics[a].state_dict()), strict=True)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def make_updater(spec: Any, learner_config: Any, device: str | torch.device | None = None, seed: int = 0) -> Updater:
    """The Updater for learner_config.algo; device None = learner_config.device (`auto` = cuda if any).
    learner_config.fast: the batched all-agents step (learner.fast) when the agents' shapes match,
    else this plain Updater."""
    if getattr(learner_config, "fast", False):
        from mamql.learner.fast import FastUpdater, fast_supported

        ok, why = fast_supported(spec, learner_config)
        if ok:
            return FastUpdater(spec, learner_config, device, seed)
        logging.getLogger("mamql.learner").info("learner.fast: %s; using the plain per-agent updater", why)
    return Updater(spec, learner_config, device, seed)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | Path, updater: Updater, extra: Mapping[str, Any] | None = None) -> Path:
    """torch.save of {"updater": state_dict, "extra": extra} (plain tensors, numbers, strings, so
    torch.load(weights_only=True) reads it; never arbitrary pickled objects). Atomic: temp + rename,
    so a crash mid-write never leaves a truncated checkpoint under the real name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"updater": updater.state_dict(), "extra": dict(extra or {})}, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict ({"updater", "extra"}), loaded with weights_only=True on CPU; a
    missing or corrupt file is a learner.checkpoint.CheckpointError naming it. A joint-action IQL-MA
    checkpoint from before iqlma became the reference's form reads as algo iqlma-joint (its stored
    config too), so evaluating it rebuilds the critics it holds."""
    from mamql.learner.checkpoint import read_torch_checkpoint

    ckpt = read_torch_checkpoint(path)
    state = ckpt["updater"]
    try:
        algo = checkpoint_algo(state["algo"], next(iter(state["critics"].values())))
    except (KeyError, TypeError, AttributeError, StopIteration):
        return ckpt  # not an updater state this version knows: load_state_dict says what is wrong
    if algo != state["algo"]:
        state["algo"] = algo
        extra = ckpt["extra"]
        try:
            config = json.loads(extra["config_json"])
            config["learner"]["algo"] = algo
            extra["config_json"] = json.dumps(config)
        except (KeyError, TypeError, ValueError):
            pass
    return ckpt


def load_checkpoint(path: str | Path, updater: Updater) -> dict:
    """Restore `updater` exactly from `path`; returns the checkpoint's `extra` dict."""
    ckpt = read_checkpoint(path)
    updater.load_state_dict(ckpt["updater"])
    return ckpt["extra"]

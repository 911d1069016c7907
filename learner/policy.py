"""The Boltzmann policy actors run: pi_i(a_i | s) proportional to exp(Q_i(s, a_i) / alpha).

Imports only the networks and the pure math, never a trainer, so an actor process stays small.
numpy in, numpy out, batched over K environment copies, no autograd.

Weights arrive from the learner as flat `<agent>/<param>` tensors (flatten_weights). load_state
builds fresh modules and swaps them in under a lock, so an act() running concurrently in another
thread sees either the old weights or the new ones, never a mix.
"""

from __future__ import annotations

import copy
import threading
from typing import Mapping

import numpy as np
import torch
from torch import Tensor, nn

from mamql.learner.losses import boltzmann_probs, marginalize_joint_q
from mamql.learner.networks import JointCritic, build_algo_critics, checkpoint_algo

MODES = ("sample", "greedy")


def flatten_weights(critics: Mapping[str, nn.Module]) -> dict[str, Tensor]:
    """{agent: module} -> {"<agent>/<param name>": tensor} (detached, CPU): the wire naming."""
    return {
        f"{agent}/{name}": t.detach().cpu()
        for agent, module in critics.items()
        for name, t in module.state_dict().items()
    }


def unflatten_weights(flat: Mapping[str, Tensor]) -> dict[str, dict[str, Tensor]]:
    """Inverse of flatten_weights. Splits at the LAST '/', since parameter names never hold one."""
    out: dict[str, dict[str, Tensor]] = {}
    for key, t in flat.items():
        agent, sep, name = key.rpartition("/")
        if not sep or not agent:
            raise ValueError(f"weight name {key!r} is not '<agent>/<param>'")
        out.setdefault(agent, {})[name] = t
    return out


class BoltzmannPolicy:
    """Acts for every agent from its critic. mode "sample" draws from the Boltzmann policy (how the
    experts and the training rollouts behave); "greedy" takes argmax Q. With probability epsilon an
    action is replaced by a uniform random one. A ConditionedCritic (IQL-MA) acts with the other
    agents' actions left out, as the reference code does (they are not known before everyone acts);
    a JointCritic (iqlma-joint) by the marginal of its joint Boltzmann policy over its own action."""

    def __init__(
        self,
        critics: Mapping[str, nn.Module],
        alpha: float = 1.0,
        mode: str = "sample",
        epsilon: float = 0.0,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)
        self.mode = mode
        self.epsilon = float(epsilon)
        self.device = torch.device(device)
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._critics = {a: m.to(self.device).eval() for a, m in critics.items()}
        self.version = 0

    @property
    def agents(self) -> list[str]:
        return list(self._critics)

    def action_values(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Q_i(s, a_i) per agent as numpy [K, A_i] (marginalised for joint critics)."""
        with self._lock:
            critics = self._critics  # one consistent set of weights for this whole call
        out = {}
        with torch.inference_mode():
            for agent, critic in critics.items():
                x = torch.as_tensor(np.asarray(obs[agent]), device=self.device)
                q = critic(x)
                if isinstance(critic, JointCritic):
                    q = marginalize_joint_q(q, critic.num_actions_per_agent, critic.agent_index, self.alpha)
                out[agent] = q.float().cpu().numpy()
        return out

    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """obs[agent]: [K, *obs_shape] -> actions[agent]: [K] int64."""
        actions = {}
        for agent, q in self.action_values(obs).items():
            k, n = q.shape
            if self.mode == "greedy":
                a = q.argmax(axis=1)
            else:
                probs = boltzmann_probs(torch.from_numpy(q).double(), self.alpha).numpy()
                u = self._rng.random((k, 1))
                a = np.minimum((probs.cumsum(axis=1) < u).sum(axis=1), n - 1)  # inverse CDF
            if self.epsilon > 0:
                explore = self._rng.random(k) < self.epsilon
                a = np.where(explore, self._rng.integers(0, n, size=k), a)
            actions[agent] = a.astype(np.int64)
        return actions

    def load_state(self, state: Mapping[str, Mapping[str, Tensor]], version: int | None = None) -> None:
        """Swap in new weights {agent: state_dict}: built on copies, swapped atomically."""
        with self._lock:
            current = self._critics
        missing = set(current) - set(state)
        if missing:
            raise KeyError(f"weights lack agents {sorted(missing)}")
        fresh = {}
        for agent, module in current.items():
            new = copy.deepcopy(module)
            new.load_state_dict({k: torch.as_tensor(v) for k, v in state[agent].items()}, strict=True)
            fresh[agent] = new.eval()
        with self._lock:
            self._critics = fresh
            if version is not None:
                self.version = int(version)

    def load_flat(self, flat: Mapping[str, Tensor], version: int | None = None) -> None:
        """load_state from the flat `<agent>/<param>` naming used on the wire."""
        self.load_state(unflatten_weights(flat), version)

    def state_dict(self) -> dict[str, Tensor]:
        """The current weights, flat `<agent>/<param>`."""
        with self._lock:
            critics = self._critics
        return flatten_weights(critics)


# --------------------------------------------------------------------------- checkpoints as experts


class CheckpointExpert:
    """A learner checkpoint (learner.updater.save_checkpoint: MAMQL, IQL-MA, BC or soft-Q) as an
    expert: its critics act through a BoltzmannPolicy. Read with weights_only=True (never unpickled);
    critics are rebuilt from the checkpoint's own config, for the env they will act in, so a checkpoint
    of another env is one InputError line rather than a shape error from torch."""

    def __init__(self, path: str, env_name: str | None = None, env_kwargs: Mapping | None = None):
        import hashlib
        import json

        from mamql.envs.registry import canonical_name, env_spec
        from mamql.learner.checkpoint import CheckpointError, read_torch_checkpoint

        self.path = str(path)
        ckpt = read_torch_checkpoint(path)
        try:
            stored = json.loads(ckpt["extra"]["config_json"])
            learner, env = stored["learner"], stored["env"]
            self.step = int(ckpt["updater"]["step"])
            self.alpha, self.gamma = float(learner["alpha"]), float(learner["gamma"])
            state = ckpt["updater"]["critics"]
            self.algo = checkpoint_algo(str(ckpt["updater"]["algo"]), next(iter(state.values())))
            hidden, network = tuple(learner.get("hidden") or ()) or None, learner.get("network", "default")
            self.env, kwargs = str(env["name"]), dict(env.get("kwargs") or {})
        except (KeyError, TypeError, ValueError, AttributeError, StopIteration) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else (str(exc).splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"{path} is not a valid checkpoint: {reason}") from None
        if env_name is not None and canonical_name(env_name) != canonical_name(self.env):
            raise CheckpointError(f"checkpoint {path} was trained on env {self.env!r}, not {env_name!r}")
        self.env_kwargs = kwargs if env_kwargs is None else dict(env_kwargs)
        try:
            spec = env_spec(self.env, **self.env_kwargs)
            critics = build_algo_critics(spec, self.algo, hidden, network)
            for agent, module in critics.items():
                module.load_state_dict(state[agent], strict=True)
        except (KeyError, RuntimeError, ValueError) as exc:  # another agent set, other shapes (env.kwargs)
            reason = f"no critic for agent {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
            raise CheckpointError(f"checkpoint {path} does not fit env {self.env!r} "
                                  f"{self.env_kwargs or ''}: {reason}") from None
        self.critics = critics
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        self.sha256 = h.hexdigest()

    def policy(self, temperature: float | None = None, mode: str = "sample", epsilon: float = 0.0,
               seed: int | None = None) -> BoltzmannPolicy:
        """Boltzmann(Q/temperature) over a copy of the critics; temperature None: the checkpoint's alpha."""
        return BoltzmannPolicy(copy.deepcopy(self.critics), alpha=self.alpha if temperature is None else temperature,
                               mode=mode, epsilon=epsilon, seed=seed)

    def info(self, temperature: float | None = None, mode: str = "sample") -> dict:
        """Where demonstrations came from, for dataset manifests and .npz metadata: `alpha` is the
        temperature sampled at (`sampling`: sample or greedy), `gamma` and `learner_alpha` the
        checkpoint's training config."""
        return {"kind": "checkpoint", "checkpoint": self.path, "sha256": self.sha256, "algo": self.algo,
                "step": self.step, "env": self.env, "alpha": self.alpha if temperature is None else float(temperature),
                "learner_alpha": self.alpha, "gamma": self.gamma, "sampling": mode}

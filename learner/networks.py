"""Critic networks: one marginal critic Q_i(s, .) per agent over its OWN actions (MAMQL, BC, soft-Q),
or, for the IQL-MA baselines, one per agent that also sees the other agents' actions
(ConditionedCritic, algo iqlma) or ranges over the joint action (JointCritic, algo iqlma-joint);
build_algo_critics picks by algo.

Built from any env spec object with `agents`, `obs_shape[agent]`, `obs_dtype[agent]` and
`num_actions[agent]` (envs.EnvSpec has exactly these; we do not import envs so that actors and
tests can use a stand-in).

Architectures:
- Image observations (C, H, W), e.g. Gems' 5x15x15 0/1 planes:
      conv3x3(C->32, pad 1) ReLU -> conv3x3(32->64, stride 2, pad 1) ReLU -> flatten (64 x 8 x 8)
      -> 1024 ELU -> 1024 ELU -> A.
  The paper's head (1024 -> 1024 -> A) is kept. The reference trunk (conv5x5 64 -> conv3x3 64, no
  padding, 5184 features, dropout 0.2) costs ~10 M multiply-adds per row; ours ~6.7 M. The first
  conv keeps full resolution so a single agent/gem cell is seen exactly; the strided second conv
  halves the flattened width that feeds the largest layer. No dropout: the critic's outputs ARE
  the loss's reward and value, and dropout noise in them biases the soft maximum.
  uint8 input is cast to float inside forward (planes are 0/1, so no rescaling); keeping obs uint8
  until the device saves 4x on replay, wire and host-to-device copies.
- Vector observations (D,): MLP D -> hidden... -> A with ELU (as the reference). Default widths
  (256, 256) are the paper's Highway size; the paper's Overcooked/Kitchen net 2048 -> 4096 -> 2048
  (PAPER_KITCHEN_HIDDEN, ~17 M multiply-adds per row) is available through `hidden` but too slow
  for the CPU default.
- `first_run_hidden`: what `mamql local` puts in an empty `learner.hidden` before it writes the
  run's config: the paper's head on CUDA, CPU_IMAGE_HIDDEN for image critics on a CPU learner.
- `network="mlp"`: flatten + MLP for any observation shape (planes included).
- `network="linear"`: one Linear(prod(obs_shape) -> A) layer, obs_dim * A weights + A biases: a Q
  table when observations are one-hot, the smallest critic a small custom env can have.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

IMAGE_HIDDEN = (1024, 1024)
VECTOR_HIDDEN = (256, 256)
PAPER_KITCHEN_HIDDEN = (2048, 4096, 2048)
# The image head `mamql local` uses on a CPU learner: a Gems update (batch 256+256, 2 agents) costs
# ~0.4 s of one core with it against ~1.0 s with IMAGE_HIDDEN (the conv trunk is then the larger part),
# and 300 updates still lift training returns well above random play (README's quick start).
CPU_IMAGE_HIDDEN = (256,)
NETWORKS = ("default", "mlp", "linear")  # config.LearnerConfig.network


def _mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, int(width)), nn.ELU()]
        in_dim = int(width)
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


class Critic(nn.Module):
    """Q(s, .) -> [N, num_outputs]. network "default": a CNN trunk for (C, H, W) observations, an MLP
    otherwise; "mlp": an MLP for any shape; "linear": no hidden layer."""

    def __init__(self, obs_shape: Sequence[int], num_outputs: int, hidden: Sequence[int] | None = None,
                 network: str = "default"):
        super().__init__()
        if network not in NETWORKS:
            raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
        if network == "linear" and hidden:
            raise ValueError(f"a linear critic has no hidden layers, got hidden={list(hidden)}")
        self.obs_shape = tuple(int(d) for d in obs_shape)
        self.num_outputs = int(num_outputs)
        self.network = network
        if network == "default" and len(self.obs_shape) == 3:
            c, h, w = self.obs_shape
            self.trunk: nn.Module = nn.Sequential(
                nn.Conv2d(c, 32, kernel_size=3, stride=1, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, kernel_size=3, stride=2, padding=1),
                nn.ReLU(),
                nn.Flatten(),
            )
            features = 64 * ((h + 1) // 2) * ((w + 1) // 2)
            hidden = IMAGE_HIDDEN if not hidden else hidden
        else:
            self.trunk = nn.Flatten()
            features = math.prod(self.obs_shape)
            hidden = () if network == "linear" else VECTOR_HIDDEN if not hidden else hidden
        self.hidden = tuple(int(x) for x in hidden)
        self.features = features
        self.head = _mlp(features, self.hidden, self.num_outputs)

    def forward(self, obs: Tensor) -> Tensor:
        x = obs if obs.is_floating_point() else obs.float()
        return self.head(self.trunk(x))


class JointCritic(Critic):
    """Joint-action IQL-MA critic of agent `agent_index` (algo iqlma-joint, not the reference's
    form): Q_i(s, a_1..a_n) over the flattened joint action (prod(num_actions_per_agent) outputs,
    first agent most significant; see joint_action_index)."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_actions_per_agent: Sequence[int],
        agent_index: int,
        hidden: Sequence[int] | None = None,
        network: str = "default",
    ):
        self.num_actions_per_agent = tuple(int(n) for n in num_actions_per_agent)
        super().__init__(obs_shape, math.prod(self.num_actions_per_agent), hidden, network)
        self.agent_index = int(agent_index)


class ConditionedCritic(Critic):
    """IQL-MA critic of agent `agent_index` (the reference code's `Critic_Gems(acts_size)`):
    Q_i(s, a_-i, .) over its OWN actions, with the other agents' actions a_-i as one-hot input
    (others_one_hot) joined to the trunk's features in front of the head.

    The head's first layer over [features, one-hot] is kept as two layers summed, `head[0]` on the
    features and `others` (no bias) on the one-hot: the same function and initial distribution as
    one Linear over the concatenation, but "no action known" is simply the second term left out.
    That is how it acts (forward without `others`): the reference plugs in an all-zero action vector
    at evaluation, since the others' current actions are not known before everyone acts."""

    def __init__(
        self,
        obs_shape: Sequence[int],
        num_actions_per_agent: Sequence[int],
        agent_index: int,
        hidden: Sequence[int] | None = None,
        network: str = "default",
    ):
        self.num_actions_per_agent = tuple(int(n) for n in num_actions_per_agent)
        if not 0 <= int(agent_index) < len(self.num_actions_per_agent):
            raise ValueError(f"agent_index {agent_index} is not one of {len(self.num_actions_per_agent)} agents")
        super().__init__(obs_shape, self.num_actions_per_agent[int(agent_index)], hidden, network)
        self.agent_index = int(agent_index)
        self.others_dim = sum(self.num_actions_per_agent) - self.num_outputs
        first = self.head[0]
        self.others = nn.Linear(self.others_dim, first.out_features, bias=False)
        bound = 1.0 / math.sqrt(first.in_features + self.others_dim)  # nn.Linear's init over the concatenation
        with torch.no_grad():
            for t in (first.weight, first.bias, self.others.weight):
                t.uniform_(-bound, bound)

    def forward(self, obs: Tensor, others: Tensor | None = None) -> Tensor:
        """obs [N, *obs_shape], others [N, others_dim] (others_one_hot) or None (acting: unknown) -> [N, A_i]."""
        x = obs if obs.is_floating_point() else obs.float()
        h = self.head[0](self.trunk(x))
        if others is not None:
            if others.shape != (h.shape[0], self.others_dim):
                raise ValueError(f"others must be [{h.shape[0]}, {self.others_dim}] (others_one_hot), "
                                 f"got {list(others.shape)}")
            h = h + self.others(others.to(h.dtype))
        for layer in itertools.islice(self.head, 1, None):
            h = layer(h)
        return h


def others_one_hot(actions: Tensor, num_actions_per_agent: Sequence[int], agent_index: int) -> Tensor:
    """ConditionedCritic's `others` input: [N, n_agents] integer actions -> [N, sum_{j != i} A_j]
    float, the one-hots of every agent but `agent_index`, concatenated in agent order."""
    actions = torch.as_tensor(actions).long()
    n = [int(k) for k in num_actions_per_agent]
    if actions.ndim != 2 or actions.shape[1] != len(n):
        raise ValueError(f"actions must be [N, {len(n)}] (one column per agent), got {list(actions.shape)}")
    parts = [torch.nn.functional.one_hot(actions[:, j], n[j]) for j in range(len(n)) if j != int(agent_index)]
    if not parts:
        return torch.zeros((actions.shape[0], 0), device=actions.device)
    return torch.cat(parts, dim=-1).float()


def build_critics(spec: Any, hidden: Sequence[int] | None = None, network: str = "default") -> dict[str, Critic]:
    """One marginal critic per agent, in spec.agents order. hidden=None or () = default widths."""
    return {a: Critic(spec.obs_shape[a], spec.num_actions[a], hidden, network) for a in spec.agents}


def build_joint_critics(spec: Any, hidden: Sequence[int] | None = None,
                        network: str = "default") -> dict[str, JointCritic]:
    """One joint-action critic per agent (IQL-MA baseline)."""
    n = [int(spec.num_actions[a]) for a in spec.agents]
    return {a: JointCritic(spec.obs_shape[a], n, i, hidden, network) for i, a in enumerate(spec.agents)}


def build_conditioned_critics(spec: Any, hidden: Sequence[int] | None = None,
                              network: str = "default") -> dict[str, ConditionedCritic]:
    """One critic per agent conditioned on the others' actions (IQL-MA baseline, algo iqlma)."""
    n = [int(spec.num_actions[a]) for a in spec.agents]
    return {a: ConditionedCritic(spec.obs_shape[a], n, i, hidden, network) for i, a in enumerate(spec.agents)}


def build_algo_critics(spec: Any, algo: str, hidden: Sequence[int] | None = None,
                       network: str = "default") -> dict[str, Critic]:
    """The critics `algo` trains (and its actors act with): iqlma ConditionedCritic, iqlma-joint
    JointCritic, every other algo the marginal Critic."""
    build = {"iqlma": build_conditioned_critics, "iqlma-joint": build_joint_critics}.get(algo, build_critics)
    return build(spec, hidden, network)


def checkpoint_algo(algo: str, critic_state: Mapping[str, Any]) -> str:
    """The algo a checkpoint's critics belong to: `iqlma` checkpoints written before iqlma became the
    reference's conditioned critic hold joint-action critics (no `others.weight`), which are algo
    iqlma-joint now; every other algo is returned as it is. critic_state: one agent's state_dict."""
    return "iqlma-joint" if algo == "iqlma" and "others.weight" not in critic_state else algo


def first_run_hidden(spec: Any, device: str = "auto") -> tuple[int, ...]:
    """The `hidden` for a run that leaves it empty, for a learner on `device` (auto | cpu | cuda...):
    CPU_IMAGE_HIDDEN when an agent has image observations and the learner will run on CPU, else ()
    (the default widths). The caller writes the choice into the run's config, so the actors, which
    act on CPU whatever the learner's device, build the same critic."""
    if not any(len(spec.obs_shape[a]) == 3 for a in spec.agents):
        return ()
    on_cuda = torch.cuda.is_available() if str(device) == "auto" else str(device).startswith("cuda")
    return () if on_cuda else CPU_IMAGE_HIDDEN


def torch_dtype(dtype: Any) -> torch.dtype:
    """numpy dtype / name / torch dtype -> torch dtype (for allocating obs on the device)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    return torch.from_numpy(np.zeros(0, dtype=np.dtype(dtype))).dtype


def forward_current_next(critic: nn.Module, obs: Tensor, next_obs: Tensor,
                         others: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Q at s and at s' from ONE forward pass over the concatenated rows (one big matmul beats two
    half-size ones, especially on CPU). `others` (a ConditionedCritic's input) is used at both."""
    if others is None:
        q_all = critic(torch.cat([obs, next_obs], dim=0))
    else:
        q_all = critic(torch.cat([obs, next_obs], dim=0), torch.cat([others, others], dim=0))
    return q_all[: obs.shape[0]], q_all[obs.shape[0] :]

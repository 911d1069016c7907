"""The policy interface shared by scripted experts, learned policies and random play.

Actors step K environment copies at once, so a policy maps a batch of observations per agent to a
batch of actions per agent. Experts and learned policies implement the same call, which is what lets
one actor process serve both training rollouts and demonstration collection.
"""

from __future__ import annotations

from typing import Mapping, Protocol

import numpy as np


class Policy(Protocol):
    def act(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """obs[agent] has shape [K, *obs_shape]; returns actions[agent] of shape [K] (int64)."""
        ...

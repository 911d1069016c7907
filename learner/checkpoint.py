"""Critic weights on disk as safetensors (never pickle): flat `<agent>/<param>` names, the same as
on the wire, plus string metadata (e.g. step, algo, config hash)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from learner.policy import flatten_weights, unflatten_weights


def save_critics(path: str | Path, critics: Mapping[str, nn.Module], metadata: Mapping[str, object] | None = None) -> None:
    """Write every agent's critic weights to one .safetensors file (atomically: temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    flat = {k: v.contiguous() for k, v in flatten_weights(critics).items()}
    save_file(flat, str(tmp), metadata={str(k): str(v) for k, v in (metadata or {}).items()})
    tmp.replace(path)


def load_critic_state(path: str | Path) -> dict[str, dict[str, Tensor]]:
    """{agent: state_dict} from save_critics' file; feed to module.load_state_dict or
    BoltzmannPolicy.load_state."""
    return unflatten_weights(load_file(str(path)))


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})

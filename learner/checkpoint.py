"""Checkpoint files: critic weights as safetensors (flat `<agent>/<param>` names, the same as on the
wire, plus string metadata), and the one reader of learner.updater's torch.save checkpoints.
Neither ever unpickles code; a file that is not a checkpoint is a CheckpointError naming it."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Mapping

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mamql.learner.policy import flatten_weights, unflatten_weights
from mamql.config import InputError


class CheckpointError(InputError):
    """A checkpoint path that does not exist or does not hold a checkpoint."""


def read_torch_checkpoint(path: str | Path, keys: tuple[str, ...] = ("updater", "extra")) -> dict:
    """torch.load(weights_only=True) on CPU of a dict holding `keys`. Any failure is a CheckpointError
    with a short reason: torch's own messages suggest weights_only=False, which must never be done with
    a file from disk, and a non-zip file gets a pickle-protocol warning before it fails."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since torch 1.6
        raise CheckpointError(f"{path} is not a valid checkpoint: not a torch.save archive")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the file is not a checkpoint
        if type(exc).__name__ == "UnpicklingError":  # the weights-only unpickler refused an object
            reason = "it holds objects other than tensors and plain data, which are never unpickled"
        else:  # torch's first sentence, without its C++ source location and advice
            reason = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", str(exc)).split(". ")[0].strip()
        raise CheckpointError(f"{path} is not a valid checkpoint: {reason or type(exc).__name__}") from None
    missing = [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a valid checkpoint: no {', '.join(map(repr, missing))} entry")
    return ckpt


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
    try:
        return unflatten_weights(load_file(str(path)))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is not a valid checkpoint: {exc}") from None


def read_metadata(path: str | Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})

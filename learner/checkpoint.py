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


def step_checkpoint(checkpoint_dir: str | Path, step: int) -> Path:
    """The path of the updater checkpoint at `step`: learner_<8-digit step>.pt, so that names sort by step."""
    return Path(checkpoint_dir) / f"learner_{step:08d}.pt"


def step_checkpoints(checkpoint_dir: str | Path) -> list[Path]:
    """The updater checkpoints in a folder (step_checkpoint's names), by step, oldest first; [] when
    there are none. Ordered by the number, not the name, so a 9-digit step still sorts last."""
    found = [(int(m.group(1)), p) for p in Path(checkpoint_dir).glob("learner_*.pt")
             if (m := re.fullmatch(r"learner_(\d+)\.pt", p.name))]
    return [p for _, p in sorted(found)]


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


def export_acting_checkpoint(source: str | Path, out: str | Path) -> dict:
    """Copy a learner checkpoint without what only resuming its training reads: the optimizer moments
    (their param groups stay, with no state, so a load starts a fresh Adam) and the target critics (a
    load starts them from the critics). About a third of the size, for an expert to commit or ship; it
    loads wherever the source does (CheckpointExpert, `mamql evaluate`) and acts and scores the same.
    Atomic (temp file + rename); returns {bytes, sha256, source, source_sha256, algo, step}."""
    import hashlib

    import torch

    source, out = Path(source), Path(out)
    ckpt = read_torch_checkpoint(source)
    state = dict(ckpt["updater"])
    if not isinstance(state.get("critics"), dict) or not isinstance(state.get("optimizers", {}), dict):
        raise CheckpointError(f"{source} is not a valid checkpoint: no critics")
    state["optimizers"] = {a: {"state": {}, "param_groups": o.get("param_groups", [])}
                           for a, o in state.get("optimizers", {}).items()}
    state.pop("targets", None)
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    extra = {**ckpt["extra"], "exported_from": str(source), "exported_from_sha256": source_sha}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"updater": state, "extra": extra}, tmp)
    tmp.replace(out)
    data = out.read_bytes()
    return {"checkpoint": str(out), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "source": str(source), "source_sha256": source_sha, "algo": str(state.get("algo")),
            "step": int(state.get("step", -1))}


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

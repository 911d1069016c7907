"""TensorBoard event files of a training run, in `<run dir>/tensorboard/` (`tensorboard --logdir runs`).

On by default: `mamql train` and the distributed learner already log every number as a
metrics.jsonl record, and this writer files the same records as TensorBoard scalars (x axis: learner
updates), named the way users of CleanRL or Sample Factory look for them:

  losses/<term>/<agent>            the update's loss terms per agent (loss, q_gap, expert_q, ...)
  returns/rollout[/<agent>]        mean return of the training episodes (Boltzmann sampling)
  returns/eval_greedy[/<agent>]    evaluation returns, greedy and sampled (eval_sample)
  reward_recovery/<agent>/<what>   recovered vs true reward on expert rows (pearson, epic_pearson)
  throughput/updates_per_s         from the record, or from successive records' step and time
  anything else under its metrics.jsonl key (weight_version, replay_ratio, online_size, ...)

The distributed learner sees no episodes: its returns are in the actors' metrics (Grafana,
status.jsonl). The event file is flushed after every record, so a killed run loses nothing written.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

SKIP = ("step", "time", "event")


def tag_of(key: str, agents: Iterable[str]) -> str:
    """The TensorBoard tag of a metrics.jsonl key."""
    head, _, rest = key.partition("/")
    if head in set(agents) and rest:
        return f"losses/{rest}/{head}"
    if head == "rollout_return":
        return f"returns/rollout/{rest}" if rest else "returns/rollout"
    if head == "eval":  # eval/<mode>/<agent>
        mode, _, agent = rest.partition("/")
        return f"returns/eval_{mode}/{agent}"
    if head == "recovery":
        return f"reward_recovery/{rest}"
    if key == "updates_per_s":
        return "throughput/updates_per_s"
    return key


def scalars(record: Mapping[str, Any], agents: Iterable[str]) -> dict[str, float]:
    """The finite numbers of a record, by tag; eval and rollout returns also get their mean over agents."""
    agents = list(agents)
    out = {tag_of(k, agents): float(v) for k, v in record.items()
           if k not in SKIP and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    for mode in ("greedy", "sample"):
        per_agent = [out[f"returns/eval_{mode}/{a}"] for a in agents if f"returns/eval_{mode}/{a}" in out]
        if per_agent:
            out[f"returns/eval_{mode}"] = sum(per_agent) / len(per_agent)
    return out


class TensorBoardLog:
    """Writes metrics.jsonl records to `log_dir` as scalars; the event file is created at the first record."""

    def __init__(self, log_dir: str | Path, agents: Iterable[str]):
        self.log_dir = Path(log_dir)
        self.agents = list(agents)
        self._writer = None
        self._last: tuple[float, float] | None = None  # (step, time) of the previous record with both

    def write(self, record: Mapping[str, Any]) -> None:
        step = record.get("step")
        if step is None:
            return
        values = scalars(record, self.agents)
        now = record.get("time")
        if now is not None and record.get("event") is None:
            if "throughput/updates_per_s" not in values and self._last and now > self._last[1]:
                values["throughput/updates_per_s"] = (step - self._last[0]) / (now - self._last[1])
            self._last = (step, now)
        if not values:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))
        for tag, value in values.items():
            self._writer.add_scalar(tag, value, global_step=int(step), walltime=now)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def recovery_record(updater: Any, demos: Mapping[str, Any], max_rows: int = 1024) -> dict[str, float | None]:
    """reward_recovery's headline numbers as flat record keys: recovery/<agent>/pearson (raw
    recovered vs true reward on expert rows; absent when the env has no known reward) and
    recovery/<agent>/epic_pearson (shaping-invariant; Gems only). NaN becomes None (valid JSON)."""
    from mamql.learner.evaluate import reward_recovery

    if callable(getattr(updater, "critics", None)):  # FastUpdater: per-agent CPU copies of its stacked critics
        updater = _CriticsView(updater, updater.critics())
    out: dict[str, float | None] = {}
    for agent, result in reward_recovery(updater, demos, max_rows=max_rows, epic_rows=min(max_rows, 1024)).items():
        if result["raw"] is not None:
            out[f"recovery/{agent}/pearson"] = result["raw"]["pearson"]
        if result["epic_pearson"] is not None:
            out[f"recovery/{agent}/epic_pearson"] = float(result["epic_pearson"])
    return {k: v if v is None or math.isfinite(v) else None for k, v in out.items()}


class _CriticsView:
    """An updater as reward_recovery reads it (`critics` a dict of modules, on `device`)."""

    def __init__(self, updater: Any, critics: dict):
        self._updater, self.critics = updater, critics
        self.device = next(next(iter(critics.values())).parameters()).device

    def __getattr__(self, name: str) -> Any:
        return getattr(self._updater, name)

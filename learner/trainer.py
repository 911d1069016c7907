"""Single-process MAMQL training: envs, in-process replay and the Updater in one loop.

The distributed learner drives the same Updater from replay services; this loop is the reference
and what CPU users run:

  seed the online table with random-policy transitions
  repeat: roll out the current Boltzmann policies (sampling, alpha) for a few vector-env steps
          into the FIFO online table; sample batch_size expert + batch_size online rows;
          updater.update(expert, online)
  every log_every:        loss terms per agent, Q gap, rollout return per agent, updates/s
                          -> runs/<name>/metrics.jsonl

algo soft-q learns from the env's rewards instead of demonstrations: no expert table (demos is
None), online rows keep `reward/<agent>`, and only online rows are sampled.
  every eval_every:       greedy and sampled mean return per agent
  every checkpoint_every: runs/<name>/checkpoints/learner_<step>.pt

Resume restores the learner exactly (weights, Adam moments, step, agent-order rng). The online
replay and the env/rollout rngs are NOT in the checkpoint: a resumed run re-seeds the online table
with random data and rolls out with seeds derived from the step, so the continuation is a valid run
but not bit-identical to an uninterrupted one (the Updater itself is; see the tests).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mamql.config import Config, ReplayConfig, TableConfig, dump_config, to_dict

EXPERT, ONLINE = "expert", "online"
TRAIN_FIELDS = ("obs", "action", "next_obs")  # the IRL learner never reads rewards: demos need none (learner.demos)
SOFT_Q_FIELDS = (*TRAIN_FIELDS, "reward")  # forward soft-Q learns from the online rows' env rewards


def run_dir_of(config: Config) -> Path:
    return Path(config.run.root) / config.run.name


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    from mamql.learner.checkpoint import step_checkpoints

    found = step_checkpoints(Path(run_dir, "checkpoints"))
    return found[-1] if found else None


def _train_fields(batch: Mapping[str, np.ndarray], agents: list[str],
                  fields: tuple[str, ...] = TRAIN_FIELDS) -> dict[str, np.ndarray]:
    keep = [f"{k}/{a}" for a in agents for k in fields] + ["done", "truncated"]
    return {k: np.asarray(batch[k]) for k in keep}


class Trainer:
    def __init__(self, config: Config, demos: Mapping[str, np.ndarray] | None, run_dir: str | Path | None = None,
                 resume: bool = False, progress: bool = True, demos_meta: Mapping[str, Any] | None = None):
        from mamql.envs import env_spec
        from mamql.envs.experts import make_expert
        from mamql.envs.vector import VectorEnv
        from mamql.learner.demos import gamma_warning
        from mamql.learner.evaluate import policy_from
        from mamql.learner.updater import load_checkpoint, make_updater, set_torch_threads
        from mamql.replay.local import LocalReplay

        self.config, lc = config, config.learner
        self.run_dir = Path(run_dir) if run_dir else run_dir_of(config)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.progress = progress
        set_torch_threads(lc.torch_threads)
        env_kwargs = dict(config.env.kwargs)
        self.spec = env_spec(config.env.name, **env_kwargs)
        self.agents = list(self.spec.agents)
        self.updater = make_updater(self.spec, lc, None, seed=config.run.seed)
        self.resumed_from = None
        if resume:
            ckpt = latest_checkpoint(self.run_dir)
            if ckpt is None:
                raise FileNotFoundError(f"--resume: no checkpoint under {self.ckpt_dir}")
            load_checkpoint(ckpt, self.updater)
            self.resumed_from = str(ckpt)
        self.soft_q = lc.algo == "soft-q"
        if (demos is None) != self.soft_q:
            raise ValueError("algo soft-q takes no demos; every other algo needs them")
        self.online_fields = SOFT_Q_FIELDS if self.soft_q else TRAIN_FIELDS
        tables = [TableConfig(name=ONLINE, capacity=lc.online_capacity)]
        if not self.soft_q:
            self.demos = _train_fields(demos, self.agents)
            warning = gamma_warning(demos_meta or {}, lc.gamma)
            if warning:
                logging.getLogger("mamql.learner").warning(warning)
            tables.insert(0, TableConfig(name=EXPERT, capacity=len(self.demos["done"]), read_only=True))
        step = self.updater.step
        seed = config.run.seed + 7919 * step  # resumed runs get fresh but deterministic streams
        self.replay = LocalReplay(ReplayConfig(tables=tuple(tables)), seed=seed)
        if not self.soft_q:
            self.replay.load(EXPERT, self.demos)
        self.env = VectorEnv(config.env.name, config.actor.num_envs, seed=seed, **env_kwargs)
        self.obs = self.env.reset()
        # the rollout policy acts on its own CPU copy of the weights, refreshed every iteration
        self.policy = policy_from(self.updater, "sample", alpha=lc.alpha, seed=seed)
        self.rollout_returns: list[np.ndarray] = []  # per finished episode: return of each agent
        self.written_checkpoint: Path | None = None  # the newest checkpoint this Trainer wrote
        from mamql.learner.tensorboard_log import TensorBoardLog

        self.tensorboard = TensorBoardLog(self.run_dir / "tensorboard", self.agents)  # every _log record
        self._seed_online(make_expert(config.env.name, kind="random", seed=seed, **env_kwargs))
        # an optional guide expert shares the rollouts early on (learner/guide.py)
        self.guide = make_expert(config.env.name, kind=lc.guide, seed=seed + 1, **env_kwargs) if lc.guide else None
        self.guide_rng = np.random.default_rng(seed + 2)

    def _step_env(self, policy) -> None:
        from mamql.envs.vector import transition_batch

        actions = policy.act(self.obs)
        result = self.env.step(actions)
        self.replay.insert(ONLINE, _train_fields(transition_batch(self.obs, actions, result), self.agents,
                                                 self.online_fields))
        self.obs = result.obs
        if len(result.finished_ids):
            self.rollout_returns.extend(np.stack([result.episode_returns[a] for a in self.agents], axis=1))

    def _seed_online(self, random_policy) -> None:
        steps = -(-self.config.learner.seed_transitions // self.env.num_envs)
        for _ in range(max(1, steps)):
            self._step_env(random_policy)
        self.rollout_returns.clear()

    def _behaviour_policy(self):
        """The learners' Boltzmann policy, with the guide's actions mixed in while it fades out."""
        from mamql.learner.guide import GuidedPolicy, guide_probability

        lc = self.config.learner
        prob = guide_probability(self.updater.step, lc.guide_probability, lc.guide_updates) if self.guide else 0.0
        return GuidedPolicy(self.policy, self.guide, prob, self.guide_rng) if prob > 0 else self.policy

    def evaluate(self) -> dict[str, Any]:
        from mamql.learner.evaluate import policy_from, run_episodes

        out = {}
        for mode in ("greedy", "sample"):
            res = run_episodes(policy_from(self.updater, mode), self.config.env.name, self.config.learner.eval_episodes,
                               env_kwargs=self.config.env.kwargs)
            out[mode] = res["mean_return"]
        return out

    def checkpoint(self) -> Path:
        from mamql.learner.checkpoint import step_checkpoint, step_checkpoints
        from mamql.learner.updater import save_checkpoint

        path = step_checkpoint(self.ckpt_dir, self.updater.step)
        save_checkpoint(path, self.updater, {
            "config_json": json.dumps(to_dict(self.config)),
            "env": self.config.env.name,
            "algo": self.updater.algo,
            "step": self.updater.step,
            "time": time.time(),
        })
        keep = max(1, self.config.learner.keep_checkpoints)
        for old in step_checkpoints(self.ckpt_dir)[:-keep]:
            old.unlink(missing_ok=True)
        self.written_checkpoint = path
        return path

    def _log(self, record: dict) -> None:
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self.tensorboard.write(record)

    def train(self, steps: int | None = None) -> dict[str, Any]:
        """Train until updater.step == steps (default learner.steps); returns the last eval and the
        checkpoint this call wrote (None when a resumed run had nothing left to do)."""
        from tqdm import tqdm

        from mamql.learner.tensorboard_log import recovery_record

        lc = self.config.learner
        total = lc.steps if steps is None else int(steps)
        self.written_checkpoint = None
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(dump_config(self.config))
        if self.resumed_from:
            self._log({"event": "resume", "step": self.updater.step, "checkpoint": self.resumed_from})
        u = self.updater
        bar = tqdm(total=total, initial=u.step, disable=not self.progress, dynamic_ncols=True, desc=f"{u.algo}")
        sums: dict[str, float] = {}
        count, t0, last_eval = 0, time.monotonic(), None
        while u.step < total:
            self.policy.load_flat(u.policy_weights())
            behaviour = self._behaviour_policy()
            for _ in range(lc.rollout_steps_per_update):
                self._step_env(behaviour)
            expert = None if self.soft_q else self.replay.sample(EXPERT, lc.batch_size).batch
            online = self.replay.sample(ONLINE, lc.batch_size).batch
            logs = u.update(expert, online)
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            bar.update(1)
            if u.step % lc.log_every == 0 or u.step == total:
                dt = time.monotonic() - t0
                per_agent = np.mean(self.rollout_returns, axis=0).tolist() if self.rollout_returns else None
                record = {"step": u.step, "time": time.time(), "updates_per_s": count / max(dt, 1e-9),
                          **{k: v / count for k, v in sums.items()},
                          "rollout_return": float(np.mean(per_agent)) if per_agent else None,
                          **{f"rollout_return/{a}": r for a, r in zip(self.agents, per_agent or ())},
                          "online_size": self.replay.info()[ONLINE].size}
                self._log(record)
                gaps = [record.get(f"{a}/q_gap", record.get(f"{a}/loss")) for a in self.agents]
                ret = "/".join(f"{r:.1f}" for r in per_agent) if per_agent else None  # mean return per agent
                bar.set_postfix(loss=f"{np.mean([record[f'{a}/loss'] for a in self.agents]):.3f}",
                                gap=f"{np.mean(gaps):.2f}", ret=ret, ups=f"{record['updates_per_s']:.2f}")
                sums, count, t0 = {}, 0, time.monotonic()
                self.rollout_returns.clear()
            if (lc.eval_every and u.step % lc.eval_every == 0) or u.step == total:
                t_eval = time.monotonic()
                last_eval = self.evaluate()
                recovery = {} if self.soft_q else recovery_record(u, self.demos)
                t0 += time.monotonic() - t_eval  # updates/s counts training time only
                self._log({"step": u.step, "time": time.time(), "event": "eval", **{
                    f"eval/{mode}/{a}": r for mode, rets in last_eval.items() for a, r in rets.items()}, **recovery})
                bar.write(f"step {u.step} eval: {json.dumps(last_eval)}")
            if (lc.checkpoint_every and u.step % lc.checkpoint_every == 0) or u.step == total:
                self.checkpoint()
        bar.close()
        ckpt = self.written_checkpoint
        return {"step": u.step, "eval": last_eval, "checkpoint": str(ckpt) if ckpt else None}

    def close(self) -> None:
        self.env.close()
        self.replay.close()
        self.tensorboard.close()


def train(config: Config, demos: Mapping[str, np.ndarray] | None, run_dir: str | Path | None = None, resume: bool = False,
          steps: int | None = None, progress: bool = True, demos_meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    trainer = Trainer(config, demos, run_dir, resume=resume, progress=progress, demos_meta=demos_meta)
    try:
        return trainer.train(steps)
    finally:
        trainer.close()

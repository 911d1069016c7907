"""The learner process: sample from the replay service, update the critics, publish weights.

The update itself is the single-process trainer's `Updater` (learner/updater.py); this module is
the shell around it. Expert demonstrations are static, so they live in the learner's own memory
(on the GPU when there is one) and are sampled locally: only online transitions cross the
network, from a prefetching sample stream, so an update waits on replay only when the actors
cannot keep up. Every `weights.publish_every` updates the policy weights go out as a new version
over the weight service this process hosts (learner/weight_service.py), named by this learner's
epoch (random at a fresh start, kept by --resume) and carrying learner.alpha, the temperature the
actors then sample at. learner.algo=soft-q learns from the online rows' env rewards: it loads no
demonstrations and samples online rows only. The loop's time by phase (sample wait, host-to-device,
update, publish, other) is exported as mamql_learner_phase_seconds_total (mamql/phases.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from mamql.config import Config, to_dict
from mamql.metrics import Counter, Gauge, Histogram, LATENCY_BUCKETS, MetricsServer, new_registry
from mamql.phases import LEARNER_DOC, LEARNER_PHASES, PhaseClock
from mamql.weights import new_epoch
from mamql.protos import rpc

# Sampled online batches are read-only views of the replay's messages, read by the plain updater as
# tensors without a copy; torch warns (once) that such tensors must not be written, and none is.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

log = logging.getLogger("mamql.learner")

LAG_SAMPLES_PER_UPDATE = 16
POLICY_LAG_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 1000)


class ExpertSampler:
    """Uniform sampling from demonstrations held by the learner (on its device)."""

    def __init__(self, demos: dict[str, np.ndarray], device, seed: int):
        import torch

        self.device = torch.device(device)
        self.data = {k: torch.as_tensor(np.ascontiguousarray(v)).to(self.device) for k, v in demos.items()}
        self.size = len(next(iter(demos.values())))
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def sample(self, batch_size: int) -> dict:
        import torch

        idx = torch.randint(self.size, (batch_size,), generator=self.generator, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}


class LearnerMetrics:
    def __init__(self, registry, agents):
        self.updates = Counter("mamql_learner_updates", "Learner updates (all agents once)", registry=registry)
        self.loss = Gauge("mamql_learner_loss", "Latest loss terms", ["agent", "term"], registry=registry)
        self.policy_lag = Histogram(
            "mamql_learner_policy_lag", "Learner weight version minus the version that acted, per sampled transition",
            buckets=POLICY_LAG_BUCKETS, registry=registry,
        )
        self.lag_skipped = Counter(
            "mamql_learner_lag_skipped_transitions",
            "Sampled online rows without a policy-lag sample: acted by no learner or by another learner epoch",
            registry=registry,
        )
        self.sample_wait = Histogram(
            "mamql_learner_sample_wait_seconds", "Time an update waited for online data", buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.update_seconds = Histogram(
            "mamql_learner_update_seconds", "Time of one update (all agents)", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.version = Gauge("mamql_learner_weight_version", "Latest published weight version", registry=registry)
        self.consumed = Counter(
            "mamql_learner_online_transitions_consumed", "Online transitions used in updates", registry=registry
        )
        self.gpu_memory = Gauge("mamql_learner_gpu_memory_bytes", "CUDA memory allocated", registry=registry)
        self.replay_ratio = Gauge(
            "mamql_learner_replay_ratio", "Online rows consumed per online transition inserted", registry=registry
        )
        self.phase_seconds = Counter("mamql_learner_phase_seconds", LEARNER_DOC, ["phase"], registry=registry)


def weights_to_numpy(tensors: dict, wire_dtype: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """torch tensors -> numpy arrays for the wire; bfloat16 travels as its uint16 bit patterns."""
    import torch

    arrays, dtypes = {}, {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        if wire_dtype == "bfloat16":
            arrays[name] = t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
            dtypes[name] = "bfloat16"
        elif wire_dtype == "float16":
            arrays[name] = t.to(torch.float16).numpy()
        else:
            arrays[name] = t.float().numpy()
    return arrays, dtypes


class LearnerService:
    def __init__(self, config: Config, replay_address: str, demos_path: str | None, registry=None,
                 run_dir: str | None = None):
        import torch

        from mamql.envs.registry import env_spec
        from mamql.learner.demos import DEMO_FIELDS, DemosError, gamma_warning, load_demos
        from mamql.learner.updater import make_updater
        from mamql.learner.weight_service import SERVICE_NAME, WeightStore, serve_weights
        from mamql.replay.client import ReplayClient
        from mamql.config import InputError

        soft_q = config.learner.algo == "soft-q"
        if soft_q and demos_path:
            raise InputError("learner.algo=soft-q learns from the env's rewards and takes no --demos")
        if not soft_q and not demos_path:
            raise InputError(f"learner.algo={config.learner.algo} learns from demonstrations: give --demos")
        self.config = config
        self.registry = registry if registry is not None else new_registry()
        self.run_dir = Path(run_dir or Path(config.run.root) / config.run.name)
        self.checkpoint_dir = self.run_dir / "checkpoints" / "learner"
        if config.learner.torch_threads:
            torch.set_num_threads(config.learner.torch_threads)
        self.spec = env_spec(config.env.name, **config.env.kwargs)
        self.updater = make_updater(self.spec, config.learner, config.learner.device)
        self.device = getattr(self.updater, "device", "cpu")
        self.expert: ExpertSampler | None = None  # soft-q: none, it learns from rewards
        if demos_path:
            demos, meta = load_demos(demos_path)
            warning = gamma_warning(meta, config.learner.gamma)
            if warning:
                log.warning(warning)
            # only what the updater reads: reward-less demos load, and no device memory goes to unused fields
            keep = [f"{k}/{a}" for a in self.spec.agents for k in DEMO_FIELDS] + ["done", "truncated"]
            missing = [k for k in keep if k not in demos]
            if missing:
                raise DemosError(f"{demos_path} is not a valid demos file: missing field(s) {', '.join(missing)}")
            self.expert = ExpertSampler({k: demos[k] for k in keep}, self.device, config.run.seed)
        self.metrics = LearnerMetrics(self.registry, self.spec.agents)
        self.phases = PhaseClock(self.metrics.phase_seconds, LEARNER_PHASES)  # where the loop's time goes
        self.security = rpc.Security.from_config(config.auth)
        self.client = ReplayClient(replay_address, self.security, config.replay.max_message_mb)
        self.store = WeightStore()
        self.security.check_bind(config.weights.host, config.auth.insecure_no_auth)
        # Refused calls are counted per service, as on the replay (mamql_replay_rejected_requests_total).
        self.rejected = Counter("mamql_weights_rejected_requests", "Weight-service requests refused, by reason",
                                ["reason"], registry=self.registry)
        self.server, self.health = rpc.make_server(
            self.security, config.weights.max_message_mb, max_workers=config.weights.max_workers,
            on_reject=lambda method: self.rejected.labels("unauthenticated").inc(),
        )
        serve_weights(self.store, self.server, self.registry)
        self._service_name = SERVICE_NAME
        self.weights_port = 0
        self.metrics_server: MetricsServer | None = None
        self._stop = threading.Event()
        self.version = 0
        self.epoch = new_epoch()  # this incarnation; resume() restores the checkpointed one
        self.online_consumed = 0  # online transitions used by updates in this process
        from mamql.learner.tensorboard_log import TensorBoardLog

        self.tensorboard = TensorBoardLog(self.run_dir / "tensorboard", self.spec.agents)  # each metrics record

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> int:
        from mamql.ports import check_port_free  # a busy port: one line (PortInUse), nothing bound

        check_port_free(self.config.weights.host, self.config.weights.port, "weights.port")
        if self.config.metrics.enabled:
            check_port_free(self.config.metrics.host, self.config.metrics.port, "metrics.port")
        self.weights_port = rpc.bind(self.server, self.security, self.config.weights.host, self.config.weights.port)
        self.server.start()
        rpc.set_serving(self.health, [self._service_name], True)
        if self.config.metrics.enabled:
            self.metrics_server = MetricsServer(self.registry, self.config.metrics.host, self.config.metrics.port)
        return self.weights_port

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        rpc.set_serving(self.health, [self._service_name], False)
        self.store.close()
        self.server.stop(2.0).wait(3.0)
        self.client.close()
        if self.metrics_server:
            self.metrics_server.close()

    # ------------------------------------------------------------------ checkpoints
    def resume(self) -> bool:
        from mamql.learner.updater import load_checkpoint

        path = self.checkpoint_dir / "latest.pt"
        if not path.exists():
            return False
        extra = load_checkpoint(path, self.updater)
        self.version = int(extra.get("weight_version", 0))
        self.epoch = int(extra.get("weight_epoch", self.epoch))  # same learner: actors keep ordering versions
        # After a crash the lost run may have published up to checkpoint_every / publish_every versions
        # past the checkpoint. Reusing those numbers for different weights would make actors (whose
        # subscribers accept only newer versions) ignore the resumed learner until it caught up, and
        # make one version number name two weight sets. Skip past them (tests/reliability faults).
        cfg = self.config
        if cfg.learner.checkpoint_every:
            self.version += cfg.learner.checkpoint_every // max(cfg.weights.publish_every, 1) + 1
        log.info("resumed from %s at step %d, weight versions continue after %d", path, self.updater.step, self.version)
        return True

    def save(self) -> Path:
        from mamql.learner.updater import save_checkpoint

        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / "latest.pt"
        save_checkpoint(path, self.updater, {
            "config_json": json.dumps(to_dict(self.config)),  # `mamql evaluate` rebuilds the run from it
            "env": self.config.env.name,
            "algo": self.updater.algo,
            "step": self.updater.step,
            "weight_version": self.version,
            "weight_epoch": self.epoch,
            "time": time.time(),
        })
        return path

    def publish(self) -> int:
        arrays, dtypes = weights_to_numpy(self.updater.policy_weights(), self.config.weights.dtype)
        self.version += 1
        meta = {"env": self.config.env.name, "algo": self.config.learner.algo, "step": str(self.updater.step)}
        self.store.publish(arrays, version=self.version, dtypes=dtypes, metadata=meta, epoch=self.epoch,
                           alpha=self.updater.alpha)
        self.metrics.version.set(self.version)
        return self.version

    def _publish_booked(self) -> float:
        """publish(), its time booked as the publish phase; returns the seconds it took."""
        started = time.perf_counter()
        self.publish()
        seconds = time.perf_counter() - started
        self.phases.add("publish", seconds)
        return seconds

    def observe_lag(self, online: dict) -> None:
        """Policy lag (this version - the version that acted) on the first rows of an online batch:
        they are sampled uniformly already, so this is a fair subsample at a bounded cost. Versions
        are ordered only within one learner epoch: rows acted by no learner (experts, random play)
        or by another incarnation (their `policy_epoch` differs) give no lag sample and are counted
        instead. Rows without that column (a writer that predates it) are trusted when the lag is >= 0."""
        versions = online["policy_version"][:LAG_SAMPLES_PER_UPDATE]
        epochs = online.get("policy_epoch")
        mine = versions >= 0 if epochs is None else epochs[:LAG_SAMPLES_PER_UPDATE] == self.epoch
        lags = self.version - versions[mine]
        lags = lags[lags >= 0]
        for lag in lags:
            self.metrics.policy_lag.observe(float(lag))
        if len(versions) > len(lags):
            self.metrics.lag_skipped.inc(len(versions) - len(lags))

    # ------------------------------------------------------------------ the loop
    def run(self, steps: int, status_every_s: float = 10.0) -> int:
        """Update until `steps` total updates (0 = until stop()); returns updates done in this call."""
        from mamql.replay.errors import DeadlineExceeded

        cfg = self.config.learner
        phases = self.phases  # the phases partition each iteration's wall time (mamql/phases.py)
        # actors leave random play as soon as the first version exists (a lap of its own: all publish)
        phases.lap("other", self._publish_booked())
        phases.flush()
        stream = self.client.sample_stream(
            self.config.actor.table, cfg.batch_size, prefetch=4, wait_timeout=self.config.replay.wait_timeout_s
        )
        done, last_status = 0, time.monotonic()
        metrics_file = (self.run_dir / "metrics.jsonl").open("a") if self.run_dir.exists() else None
        try:
            while not self._stop.is_set() and not (steps and self.updater.step >= steps):
                waited = time.perf_counter()
                try:
                    sample = stream.next(timeout=1.0)
                except DeadlineExceeded:
                    empty = time.perf_counter() - waited
                    self.metrics.sample_wait.observe(empty)
                    phases.add("sample_wait", empty)
                    phases.lap("other", empty)
                    phases.flush()
                    continue
                arrived = time.perf_counter()
                self.metrics.sample_wait.observe(arrived - waited)
                # read-only views of the received message (mamql.wire), handed on as they are: the
                # updater copies each once, straight into its pinned/device buffers (learner/fast.py)
                online = sample.batch
                writable = time.perf_counter()
                self.observe_lag(online)
                started = time.perf_counter()
                expert = self.expert.sample(cfg.batch_size) if self.expert else None
                terms = self.updater.update(expert, online)
                updated = time.perf_counter()
                self.metrics.update_seconds.observe(updated - started)
                phases.add("sample_wait", arrived - waited)
                phases.add("host_to_device", writable - arrived + self.updater.h2d_seconds)
                phases.add("update", max(updated - started - self.updater.h2d_seconds, 0.0))
                self.metrics.updates.inc()
                self.metrics.consumed.inc(len(online["done"]))
                self.online_consumed += len(online["done"])
                done += 1
                step = self.updater.step
                if step % self.config.weights.publish_every == 0:
                    self._publish_booked()
                if step % cfg.log_every == 0:
                    self._log_terms(terms, metrics_file)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    self.save()
                if time.monotonic() - last_status > status_every_s:
                    last_status = time.monotonic()
                    log.info("step %d, weight version %d", step, self.version)
                phases.lap("other", time.perf_counter() - waited)
                phases.flush()
        finally:
            stream.close()
            if metrics_file:
                metrics_file.close()
        if self.store.version == 0 or self.updater.step % self.config.weights.publish_every:
            phases.lap("other", self._publish_booked())  # the final weights, unless this step's were just published
            phases.flush()
        self.save()
        return done

    def _log_terms(self, terms: dict[str, float], metrics_file) -> None:
        for key, value in terms.items():
            agent, _, term = key.rpartition("/")
            self.metrics.loss.labels(agent or "all", term).set(value)
        if self.device and str(self.device).startswith("cuda"):
            import torch

            self.metrics.gpu_memory.set(torch.cuda.memory_allocated())
        ratio = self._replay_ratio()
        if metrics_file:
            record = {"time": time.time(), "step": self.updater.step, "weight_version": self.version,
                      "replay_ratio": ratio, **terms}
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()
            self.tensorboard.write(record)


    def _replay_ratio(self) -> float | None:
        """Online rows consumed per online transition inserted (one Info call per log interval)."""
        from mamql.learner.fast import replay_ratio
        from mamql.replay.errors import ReplayError

        try:
            inserted = self.client.info(timeout=2.0)[self.config.actor.table].inserted
        except (ReplayError, KeyError):
            return None
        ratio = replay_ratio(self.online_consumed, inserted)
        self.metrics.replay_ratio.set(ratio)
        return ratio


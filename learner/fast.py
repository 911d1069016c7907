"""Fast learner step (issue #12): every agent's critic updated in ONE batched step.

Why: on a GPU the plain Updater is launch-bound (one forward/backward/Adam per agent, ~30 us per
kernel launch), not FLOP-bound. When all agents' critics have the same shape (Gems: both agents)
their parameters are stacked along a leading agent dim (`torch.func.stack_module_state`) and one
`vmap(functional_call)` runs every critic at once; the loss is vmapped over agents too and the SUM
of the agents' losses is backpropagated once. The agents' parameters are disjoint, so each slice
gets exactly its own gradient, and Adam is elementwise, so one Adam over the stacked tensors is
the per-agent Adam of the plain path. Agent order cannot matter either (independent losses); the
agent-order rng is still advanced every step so checkpoints stay identical to the plain path's.

Checkpoints use the plain Updater's format (per-agent critics and per-agent Adam states), so a
checkpoint written by one loads into the other.

On CUDA (guarded by device checks; tests under @pytest.mark.gpu):
- fused Adam with capturable step counters, and the whole step (forward, loss, backward, Adam)
  captured in one CUDA graph replayed per update; batches are copied into preallocated static
  input buffers first (pinned host staging + non_blocking copies for numpy batches);
- precision="bf16": forward under bf16 autocast, fp32 master weights, loss and Adam in fp32;
- update() returns a lazily materialised Mapping, so the host does not wait for the GPU unless
  the caller reads a term (the service reads them every log_every steps).
Channels-last is not used: under vmap the conv becomes one grouped conv over [N, agents*C, H, W]
whose layout vmap picks, and the trunk is < 40% of the critic's multiply-adds anyway.

DevicePrefetcher keeps a bounded queue of batches already on the device, filled by a thread.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
import time
from contextlib import nullcontext
from functools import partial
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from mamql.learner.losses import joint_action_index, mamql_loss
from mamql.learner.networks import build_algo_critics
from mamql.learner.updater import CHECKPOINT_FORMAT, chi2_alpha_of, default_weight_decay, resolve_device

log = logging.getLogger("mamql.learner.fast")

FAST_ALGOS = ("mamql", "iqlma-joint")
PRECISIONS = ("fp32", "bf16")
TERM_NAMES = ("loss", "value", "expert_reward", "chi2", "expert_q", "policy_q", "q_gap")  # mamql_loss's terms
GRAPH_WARMUP = 3


def fast_supported(spec: Any, config: Any) -> tuple[bool, str]:
    """(True, "") when one batched step can serve every agent; else (False, why)."""
    if config.algo == "soft-q":
        return False, "algo soft-q has no fast path (it always bootstraps from target critics)"
    if config.algo == "iqlma":
        return False, "algo iqlma has no fast path (its critics take the other agents' actions as input)"
    if config.algo not in FAST_ALGOS:
        return False, f"algo {config.algo!r} has no fast path"
    if getattr(config, "augment", "none") != "none":
        return False, "learner.augment has no fast path"
    if float(getattr(config, "target_tau", 0.0)) > 0:
        return False, "target critics (learner.target_tau) have no fast path"
    agents = list(spec.agents)
    shapes = {(tuple(spec.obs_shape[a]), str(spec.obs_dtype[a]), int(spec.num_actions[a])) for a in agents}
    if len(shapes) != 1:
        return False, "agents differ in observation shape/dtype or action count"
    return True, ""


class LazyTerms(Mapping):
    """"<agent>/<term>" -> float, read from a device tensor [agents, terms] on first access (one
    device-to-host copy), so an update that nobody logs never synchronises with the GPU."""

    def __init__(self, values: Tensor, agents: list[str]):
        self._values, self._agents, self._floats = values, agents, None

    def _materialise(self) -> dict[str, float]:
        if self._floats is None:
            rows = self._values.tolist()
            self._floats = {f"{a}/{k}": float(v) for a, row in zip(self._agents, rows) for k, v in zip(TERM_NAMES, row)}
        return self._floats

    def __getitem__(self, key: str) -> float:
        return self._materialise()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._materialise())

    def __len__(self) -> int:
        return len(self._agents) * len(TERM_NAMES)


class FastUpdater:
    """Drop-in for learner.updater.Updater (update, policy_weights, state_dict, load_state_dict,
    step) when fast_supported(spec, config). Initial weights equal the plain Updater's for the same
    seed (the critics are built the same way, then stacked)."""

    def __init__(self, spec: Any, config: Any, device: str | torch.device | None = None, seed: int = 0):
        ok, why = fast_supported(spec, config)
        if not ok:
            raise ValueError(f"fast updater: {why}")
        precision = getattr(config, "precision", "fp32")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.spec, self.config, self.algo = spec, config, config.algo
        self.agents: list[str] = list(spec.agents)
        self.num_actions = [int(spec.num_actions[a]) for a in self.agents]
        self.device = resolve_device(device if device is not None else config.device)
        self.cuda = self.device.type == "cuda"
        self.precision = precision
        self.use_graph = self.cuda and bool(getattr(config, "cuda_graph", True))
        self.gamma, self.alpha = float(config.gamma), float(config.alpha)
        wd = float(config.weight_decay)
        self.weight_decay = default_weight_decay(spec.name) if wd < 0 else wd
        torch.manual_seed(seed)  # the same initial weights as Updater(spec, config, seed=seed)
        critics = build_algo_critics(spec, self.algo, tuple(config.hidden) or None, getattr(config, "network", "default"))
        modules = [m.to(self.device) for m in critics.values()]
        self.state_keys = list(modules[0].state_dict().keys())  # flatten_weights order
        self.param_names = [n for n, _ in modules[0].named_parameters()]  # Adam's param index order
        params, buffers = stack_module_state(modules)
        # Linear weights [agents, out, in] are STORED transposed, as contiguous [agents, in, out]
        # leaves seen through .mT: the vmapped matmul's backward produces exactly that layout, so
        # AccumulateGrad and fused Adam never copy (a strided transpose of the largest tensors
        # otherwise costs as much as the matmuls on CPU). self.params gives the logical views.
        self._transposed = {n for n in self.param_names if params[n].dim() == 3}
        self.leaves: dict[str, Tensor] = {
            n: params[n].detach().mT.contiguous().requires_grad_(True) if n in self._transposed else params[n]
            for n in self.param_names}
        self.buffers: dict[str, Tensor] = dict(buffers)
        self._base = copy.deepcopy(modules[0]).to("meta")  # architecture only; weights come from self.params
        self._template = modules[0].cpu()  # a plain Adam over it gives the checkpoint's param_groups
        del modules
        kw: dict[str, Any] = {"fused": True, "capturable": True} if self.cuda else {"fused": True}
        self.optimizer = torch.optim.Adam(list(self.leaves.values()), lr=float(config.lr),
                                          weight_decay=self.weight_decay, **kw)
        self.rng = torch.Generator().manual_seed(int(seed))  # advanced as the plain path's agent order
        self.step = 0
        self.h2d_seconds = 0.0  # host time the latest update() spent copying its batches in (as Updater's)
        self._loss_fn = partial(mamql_loss, gamma=self.gamma, alpha=self.alpha, value_term=config.value_term,
                                chi2_on_policy=config.chi2_on_policy, chi2_alpha=chi2_alpha_of(config), as_floats=False)
        self._sizes: tuple[int, int] | None = None  # (expert rows, online rows) the static buffers fit
        self._graph: torch.cuda.CUDAGraph | None = None
        self._pinned: dict[tuple[str, int], Tensor] = {}
        self._slot_events: list[Any] = [None, None]
        self._slot = 0

    def _logical(self, t: Tensor, name: str) -> Tensor:
        """A leaf-shaped tensor (parameter or Adam moment) seen as [agents, *param shape]."""
        return t.mT if name in self._transposed else t

    @property
    def params(self) -> dict[str, Tensor]:
        """name -> stacked parameter [agents, *shape] (views of the leaves; differentiable)."""
        return {n: self._logical(self.leaves[n], n) for n in self.param_names}

    def grads(self) -> dict[str, Tensor | None]:
        """name -> stacked gradient of the last update, [agents, *shape]."""
        return {n: None if p.grad is None else self._logical(p.grad, n) for n, p in self.leaves.items()}

    # ------------------------------------------------------------------ static input buffers
    def _allocate(self, n_exp: int, n_on: int) -> None:
        """Preallocated inputs: obs_all [agents, 2N, ...] (rows: s of expert, s of online, s' of
        expert, s' of online: one forward per critic over all of them), actions [agents, N], done [N],
        is_expert [N]. Fixed addresses are what a CUDA graph replays against."""
        n = n_exp + n_on
        a0 = self.agents[0]
        obs_dtype = torch.from_numpy(np.zeros(0, dtype=np.dtype(self.spec.obs_dtype[a0]))).dtype
        if obs_dtype.is_floating_point:  # float observations take the weights' dtype (fp64 in tests)
            obs_dtype = next(iter(self.leaves.values())).dtype
        shape = tuple(self.spec.obs_shape[a0])
        self._obs = torch.zeros((len(self.agents), 2 * n, *shape), dtype=obs_dtype, device=self.device)
        self._actions = torch.zeros((len(self.agents), n), dtype=torch.long, device=self.device)
        self._done = torch.zeros(n, dtype=torch.float32, device=self.device)
        self._is_expert = torch.zeros(n, dtype=torch.float32, device=self.device)
        self._is_expert[:n_exp] = 1.0
        self._sizes = (n_exp, n_on)
        self._graph = None
        self._pinned.clear()

    def _copy_in(self, dst: Tensor, src: np.ndarray | Tensor, name: str) -> None:
        """dst (a slice of a static device buffer) <- src. numpy on CUDA goes through a pinned
        host buffer (two slots, each guarded by an event so the CPU never overwrites one whose
        copy is still in flight) and a non_blocking copy."""
        if isinstance(src, Tensor) and (src.device == self.device or not self.cuda):
            dst.copy_(src)
            return
        if not isinstance(src, Tensor):
            # replay hands out read-only views of its messages: numpy copies them once, straight
            # into the pinned slot (or the CPU buffer), with no writable copy first
            src = np.ascontiguousarray(src)
            if not self.cuda and dst.device.type == "cpu" and dst.dtype != torch.bfloat16:
                np.copyto(dst.numpy(), src, casting="unsafe")
                return
            if not self.cuda or src.dtype.hasobject:
                dst.copy_(torch.from_numpy(src if src.flags.writeable else src.copy()))
                return
        key = (name, self._slot)
        dtype = src.dtype if isinstance(src, Tensor) else torch.from_numpy(np.empty(0, src.dtype)).dtype
        pin = self._pinned.get(key)
        if pin is None or pin.shape != src.shape or pin.dtype != dtype:
            pin = self._pinned[key] = torch.empty(tuple(src.shape), dtype=dtype, pin_memory=True)
        if isinstance(src, Tensor):
            pin.copy_(src)
        else:
            np.copyto(pin.numpy(), src)
        dst.copy_(pin, non_blocking=True)

    def _load_batch(self, expert: Mapping, online: Mapping) -> None:
        """Copy the batches into the static buffers; h2d_seconds is the host time that took, less
        any wait for an earlier step's GPU work to free a pinned slot (that is update time)."""
        started = time.perf_counter()
        n_exp, n_on = len(expert["done"]), len(online["done"])
        if self._sizes != (n_exp, n_on):
            self._allocate(n_exp, n_on)
        n = n_exp + n_on
        if self.cuda:
            event = self._slot_events[self._slot]
            if event is not None:
                synchronising = time.perf_counter()
                event.synchronize()  # this slot's pinned buffers are free again
                started += time.perf_counter() - synchronising
        for i, a in enumerate(self.agents):
            self._copy_in(self._obs[i, :n_exp], expert[f"obs/{a}"], f"e/obs/{a}")
            self._copy_in(self._obs[i, n_exp:n], online[f"obs/{a}"], f"o/obs/{a}")
            self._copy_in(self._obs[i, n:n + n_exp], expert[f"next_obs/{a}"], f"e/next_obs/{a}")
            self._copy_in(self._obs[i, n + n_exp:], online[f"next_obs/{a}"], f"o/next_obs/{a}")
            self._copy_in(self._actions[i, :n_exp], expert[f"action/{a}"], f"e/action/{a}")
            self._copy_in(self._actions[i, n_exp:], online[f"action/{a}"], f"o/action/{a}")
        self._copy_in(self._done[:n_exp], expert["done"], "e/done")  # the TERMINAL flag only
        self._copy_in(self._done[n_exp:], online["done"], "o/done")
        if self.cuda:
            event = self._slot_events[self._slot] = torch.cuda.Event()
            event.record()
            self._slot ^= 1
        self.h2d_seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ the train step
    def _critic(self, params: dict, buffers: dict, obs: Tensor) -> Tensor:
        return functional_call(self._base, (params, buffers), (obs,))

    def _compute(self) -> Tensor:
        """Forward of every critic over every row, the vmapped loss, ONE backward, ONE Adam step.
        Static shapes only and no host syncs: this is the body the CUDA graph captures. Returns the
        detached terms [agents, len(TERM_NAMES)]."""
        n = self._done.shape[0]
        # no autocast weight-cast cache: it would outlive a graph capture (torch.cuda.graphs docs)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=False) if self.precision == "bf16"
                    else nullcontext())
        with autocast:
            q_all = vmap(self._critic)(self.params, self.buffers, self._obs)
        if q_all.dtype in (torch.bfloat16, torch.float16):
            q_all = q_all.float()  # the loss (logsumexp, squares) in fp32
        q, q_next = q_all[:, :n], q_all[:, n:]
        if self.algo == "iqlma-joint":  # every agent's joint-action critic is indexed by the same joint action
            actions, in_dim = joint_action_index(self._actions.T, self.num_actions), None
        else:
            actions, in_dim = self._actions, 0
        loss, terms = vmap(self._loss_fn, in_dims=(0, 0, in_dim, None, None))(
            q, q_next, actions, self._done, self._is_expert)
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()  # disjoint params: each agent's slice gets exactly its own gradient
        self.optimizer.step()
        return torch.stack([terms[k] for k in TERM_NAMES], dim=-1).detach()

    def update(self, expert: Mapping[str, np.ndarray | Tensor], online: Mapping[str, np.ndarray | Tensor]) -> Mapping[str, float]:
        """One iteration for every agent at once. Returns "<agent>/<term>" floats (a dict on CPU, a
        LazyTerms on CUDA)."""
        self._load_batch(expert, online)
        torch.randperm(len(self.agents), generator=self.rng)  # keep the rng stream the plain path's
        if self.use_graph:
            if self._graph is None:
                self._capture()
            self._graph.replay()
            out = self._graph_out.clone()  # the next replay overwrites the static output
        else:
            out = self._compute()
        self.step += 1
        if self.cuda:
            return LazyTerms(out, self.agents)
        return {f"{a}/{k}": float(v) for a, row in zip(self.agents, out.tolist()) for k, v in zip(TERM_NAMES, row)}

    def _capture(self) -> None:
        """Warm up on a side stream (autograd, cuBLAS and Adam state get allocated), restore the
        weights and Adam state the warm-up steps changed, then capture _compute into a graph."""
        saved = self._snapshot()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(GRAPH_WARMUP):
                self._compute()
        torch.cuda.current_stream().wait_stream(stream)
        self._restore(saved)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_out = self._compute()
        self._graph = graph

    def _snapshot(self) -> dict:
        with torch.no_grad():
            params = {n: p.detach().clone() for n, p in self.leaves.items()}
            state = {n: {k: v.clone() for k, v in self.optimizer.state[p].items()} for n, p in self.leaves.items()
                     if self.optimizer.state.get(p)}
        return {"params": params, "state": state}

    def _restore(self, saved: dict) -> None:
        """In place (copy_), so captured addresses stay valid. Adam state that did not exist before
        the warm-up is zeroed: step 0 with zero moments IS a fresh Adam."""
        with torch.no_grad():
            for n, p in self.leaves.items():
                p.copy_(saved["params"][n])
                for k, v in self.optimizer.state[p].items():
                    if n in saved["state"]:
                        v.copy_(saved["state"][n][k])
                    else:
                        v.zero_()

    # ------------------------------------------------------------------ weights and state
    def _agent_tensors(self, i: int) -> dict[str, Tensor]:
        every = {**self.params, **self.buffers}
        return {k: every[k][i].detach().cpu().clone(memory_format=torch.contiguous_format) for k in self.state_keys}

    def policy_weights(self) -> dict[str, Tensor]:
        """Flat `<agent>/<param>` CPU tensors, named exactly as the plain path's flatten_weights."""
        return {f"{a}/{k}": v for i, a in enumerate(self.agents) for k, v in self._agent_tensors(i).items()}

    def critics(self) -> dict[str, nn.Module]:
        """Per-agent CPU modules holding the current weights (for evaluation or a policy)."""
        out = {}
        for i, a in enumerate(self.agents):
            m = copy.deepcopy(self._template)
            m.load_state_dict(self._agent_tensors(i))
            out[a] = m
        return out

    def _plain_groups(self) -> list[dict]:
        """param_groups of the plain path's per-agent Adam (no fused/capturable flags), so the
        plain Updater loads our checkpoints unchanged."""
        group = self.optimizer.param_groups[0]
        opt = torch.optim.Adam(self._template.parameters(), lr=group["lr"], betas=group["betas"], eps=group["eps"],
                               weight_decay=group["weight_decay"])
        return opt.state_dict()["param_groups"]

    def state_dict(self) -> dict:
        """The plain Updater's checkpoint format: per-agent critics and per-agent Adam states."""
        groups = self._plain_groups()
        optimizers = {}
        for i, a in enumerate(self.agents):
            state = {}
            for j, n in enumerate(self.param_names):
                s = self.optimizer.state.get(self.leaves[n])
                if s:
                    moment = lambda k: self._logical(s[k], n)[i].detach().cpu().clone(memory_format=torch.contiguous_format)
                    state[j] = {"step": s["step"].detach().float().cpu().reshape(()).clone(),
                                "exp_avg": moment("exp_avg"), "exp_avg_sq": moment("exp_avg_sq")}
            optimizers[a] = {"state": state, "param_groups": copy.deepcopy(groups)}
        return {
            "format": CHECKPOINT_FORMAT,
            "algo": self.algo,
            "step": self.step,
            "critics": {a: self._agent_tensors(i) for i, a in enumerate(self.agents)},
            "optimizers": optimizers,
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Loads a plain or fast checkpoint. Writes in place; a captured graph is recaptured."""
        if state.get("algo") != self.algo:
            raise ValueError(f"checkpoint is for algo {state.get('algo')!r}, this updater runs {self.algo!r}")
        critics = state["critics"]
        every = {**self.params, **self.buffers}
        with torch.no_grad():
            for k in self.state_keys:
                every[k].copy_(torch.stack([torch.as_tensor(critics[a][k]) for a in self.agents]))
            opts = [state["optimizers"][a] for a in self.agents]
            group = opts[0]["param_groups"][0]
            for g in self.optimizer.param_groups:  # the checkpoint's hyperparameters win, as in Optimizer.load_state_dict
                for key in ("lr", "betas", "eps", "weight_decay"):
                    g[key] = group[key]
            for j, n in enumerate(self.param_names):
                p = self.leaves[n]
                per_agent = [o["state"].get(j, o["state"].get(str(j))) for o in opts]
                if any(s is None for s in per_agent):
                    self.optimizer.state.pop(p, None)  # a fresh Adam for this tensor
                    continue
                step = float(torch.as_tensor(per_agent[0]["step"]))
                on_device = self.cuda  # fused/capturable Adam keeps its step counter on the device
                target = self.optimizer.state.get(p) or {
                    "step": torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu"),
                    "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                target["step"].fill_(step)
                for k in ("exp_avg", "exp_avg_sq"):  # in place: a captured graph's addresses stay valid
                    self._logical(target[k], n).copy_(torch.stack([torch.as_tensor(s[k]) for s in per_agent]))
                self.optimizer.state[p] = target
        self.rng.set_state(state["rng"])
        self.step = int(state["step"])
        self._graph = None  # Adam state tensors may be new objects


# --------------------------------------------------------------------------- feeding the learner


class DevicePrefetcher:
    """A bounded queue of batches already on the device, filled by a daemon thread, so the
    host-to-device copy of batch k+1 overlaps the update on batch k.

    source() returns a dict of numpy arrays/tensors (e.g. `lambda: stream.next().batch`) or None
    to stop. On CUDA each batch goes through pinned memory on a side stream and carries an event;
    next() makes the consumer's stream wait on it (no host sync). On CPU batches become tensors."""

    def __init__(self, source: Callable[[], Mapping | None], device: str | torch.device, depth: int = 2):
        self.device = torch.device(device)
        self.source = source
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, int(depth)))
        self._stop = threading.Event()
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._thread = threading.Thread(target=self._run, name="device-prefetch", daemon=True)
        self._thread.start()

    def _to_device(self, batch: Mapping) -> tuple[dict, Any]:
        if self._stream is None:
            return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in batch.items()}, None
        out = {}
        with torch.cuda.stream(self._stream):
            for k, v in batch.items():
                host = torch.as_tensor(np.ascontiguousarray(v)).pin_memory()
                out[k] = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        return out, event

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                batch = self.source()
                if batch is None:
                    break
                item = self._to_device(batch)
                while not self._stop.is_set():
                    try:
                        self.queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:  # surfaced to the consumer, not lost in the thread
            self.queue.put(exc)
            return
        self.queue.put(None)

    def next(self, timeout: float | None = None) -> dict | None:
        """The next device batch (None when the source ended); raises what the source raised."""
        item = self.queue.get(timeout=timeout)
        if item is None or isinstance(item, BaseException):
            if isinstance(item, BaseException):
                raise item
            return None
        batch, event = item
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
            for t in batch.values():
                t.record_stream(torch.cuda.current_stream(self.device))  # memory reuse follows the consumer
        return batch

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def replay_ratio(consumed_online: float, inserted_online: float) -> float:
    """Updates' online rows per inserted online transition (samples per insert); 0 before inserts."""
    return float(consumed_online) / float(inserted_online) if inserted_online > 0 else 0.0

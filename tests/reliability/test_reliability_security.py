"""Security: token auth on every service, TLS and mTLS, no code-executing deserialisation in the
sources, message-size and concurrent-stream limits."""

from __future__ import annotations

import re
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reliability_helpers import REPO, make_certs  # noqa: E402

from mamql.config import AuthConfig, Config, with_updates  # noqa: E402
from mamql.metrics import sample_value  # noqa: E402
from mamql.protos import replay_pb2, weights_pb2  # noqa: E402
from mamql.protos.rpc import Security  # noqa: E402
from mamql.replay.client import ReplayClient, encode_request  # noqa: E402
from mamql.replay.errors import ReplayError  # noqa: E402
from mamql.replay.server import ReplayServer  # noqa: E402
from replay_helpers import make_config, small_batch  # noqa: E402

IDENTITY = dict(request_serializer=lambda b: b, response_deserializer=lambda b: b)


def with_auth(cfg: Config, **auth) -> Config:
    return Config(**{**cfg.__dict__, "auth": AuthConfig(**auth)})


def started(cfg: Config, servers: list, **kwargs) -> ReplayServer:
    server = ReplayServer(cfg, **kwargs)
    servers.append(server)
    server.start()
    return server


@pytest.fixture
def servers():
    out: list[ReplayServer] = []
    yield out
    for s in out:
        s.stop(grace=0.2, final_checkpoint=False)


# --------------------------------------------------------------------------- auth


def test_non_loopback_without_token_is_refused_by_default():
    assert AuthConfig().insecure_no_auth is False
    for host in ("0.0.0.0", "10.213.0.1", "::"):
        with pytest.raises(ValueError, match="without auth.token"):
            ReplayServer(with_updates(make_config(), replay={"host": host}))
    Security().check_bind("127.0.0.1", False)  # loopback needs no token
    Security().check_bind("localhost", False)
    Security(token="t").check_bind("0.0.0.0", False)  # a token makes any address fine
    Security().check_bind("0.0.0.0", True)  # the explicit opt-out still starts (with a warning)


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)])
def test_replay_refuses_unauthenticated_calls_without_touching_data(servers, metadata):
    server = started(with_auth(make_config(), token="s3cret"), servers)
    with ReplayClient(server.address, Security(token="s3cret")) as good:
        good.insert("online", small_batch(5), timeout=1)
    insert = encode_request("online", small_batch(3))
    with grpc.insecure_channel(server.address) as channel:
        calls = [
            lambda: channel.unary_unary("/mamql.v1.ReplayService/Info", **IDENTITY)(b"", metadata=metadata, timeout=2),
            lambda: list(channel.stream_stream("/mamql.v1.ReplayService/Insert", **IDENTITY)(
                iter([insert.SerializeToString()]), metadata=metadata, timeout=2)),
            lambda: list(channel.unary_stream("/mamql.v1.ReplayService/Sample", **IDENTITY)(
                replay_pb2.SampleRequest(table="online", batch_size=1, num_batches=1).SerializeToString(),
                metadata=metadata, timeout=2)),
            lambda: channel.unary_unary("/mamql.v1.ReplayService/Checkpoint", **IDENTITY)(
                replay_pb2.CheckpointRequest(path="/tmp/should-not-exist").SerializeToString(),
                metadata=metadata, timeout=2),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    info = server.replay.tables["online"].info()
    assert (info.size, info.inserted, info.sampled) == (5, 5, 0)
    assert sample_value(server.registry, "mamql_replay_rejected_requests_total", {"reason": "unauthenticated"}) == 4


def test_weight_service_refuses_unauthenticated_calls_and_counts_them(tmp_path, demos_path):
    from mamql.learner.service import LearnerService
    from mamql.weights import split_weights

    cfg = with_updates(make_config(), weights={"port": 0}, learner={"hidden": [32], "device": "cpu"},
                       auth={"token": "s3cret"})
    service = LearnerService(cfg, "127.0.0.1:1", demos_path, run_dir=str(tmp_path))
    port = service.start()
    try:
        service.publish()
        chunk = split_weights({"agent_0/w": np.ones(4, np.float32)}, version=99)[0].SerializeToString()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for metadata in [(), (("authorization", "Bearer nope"),)]:
                for call in (
                    lambda: channel.stream_unary("/mamql.v1.WeightService/Publish", **IDENTITY)(
                        iter([chunk]), metadata=metadata, timeout=2),
                    lambda: list(channel.unary_stream("/mamql.v1.WeightService/Subscribe", **IDENTITY)(
                        weights_pb2.SubscribeRequest().SerializeToString(), metadata=metadata, timeout=2)),
                    lambda: list(channel.unary_stream("/mamql.v1.WeightService/GetLatest", **IDENTITY)(
                        b"", metadata=metadata, timeout=2)),
                ):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # the right token gets the learner's version, not the attacker's 99
            latest = list(channel.unary_stream("/mamql.v1.WeightService/GetLatest", **IDENTITY)(
                b"", metadata=(("authorization", "Bearer s3cret"),), timeout=2))
        assert weights_pb2.WeightChunk.FromString(latest[0]).version == 1 == service.store.version
        assert sample_value(service.registry, "mamql_weights_rejected_requests_total",
                            {"reason": "unauthenticated"}) == 6
    finally:
        service.close()


# --------------------------------------------------------------------------- TLS


def test_tls_replay_needs_the_ca_and_refuses_plaintext(tmp_path, servers):
    certs = make_certs(tmp_path)
    cfg = with_auth(make_config(), tls_cert=str(certs["server_cert"]), tls_key=str(certs["server_key"]))
    server = started(cfg, servers)
    with ReplayClient(server.address, Security(tls_ca=str(certs["ca"]))) as client:
        assert client.insert("online", small_batch(4), timeout=2) == 4
        assert client.sample("online", 2, timeout=2).batch["action/a"].shape == (2,)
    with ReplayClient(server.address) as plaintext:
        with pytest.raises(ReplayError) as err:
            plaintext.insert("online", small_batch(4), timeout=1)
        assert err.value.code == "UNAVAILABLE"
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    with ReplayClient(server.address, Security(tls_ca=str(other["ca"]))) as wrong_ca:
        with pytest.raises(ReplayError) as err:
            wrong_ca.info(timeout=2)
        assert err.value.code == "UNAVAILABLE"
    assert server.replay.tables["online"].size == 4


def test_mtls_replay_rejects_clients_without_a_certificate(tmp_path, servers):
    certs = make_certs(tmp_path)
    cfg = with_auth(make_config(), tls_cert=str(certs["server_cert"]), tls_key=str(certs["server_key"]),
                    tls_ca=str(certs["ca"]), token="s3cret")
    server = started(cfg, servers)
    # no client certificate: the TLS handshake fails before any RPC reaches the server
    with ReplayClient(server.address, Security(tls_ca=str(certs["ca"]), token="s3cret")) as anonymous:
        with pytest.raises(ReplayError) as err:
            anonymous.insert("online", small_batch(2), timeout=1)
        assert err.value.code == "UNAVAILABLE"
    # a process configured like the server (cert + key + CA) presents its cert and gets through
    process = Security(token="s3cret", tls_cert=str(certs["client_cert"]), tls_key=str(certs["client_key"]),
                       tls_ca=str(certs["ca"]))
    with ReplayClient(server.address, process) as client:
        assert client.insert("online", small_batch(2), timeout=2) == 2
    assert server.replay.tables["online"].size == 2


# --------------------------------------------------------------------------- no pickle


PACKAGES = ("mamql", "protos", "replay", "learner", "actors", "envs")
FORBIDDEN = [
    (re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|marshal|shelve|joblib)\b", re.M),
     "pickle-family import"),
    (re.compile(r"\b(pickle|marshal|dill|cloudpickle)\.(loads?|Unpickler)\b"), "pickle/marshal load"),
    (re.compile(r"\byaml\.(load|load_all|unsafe_load|full_load)\("), "yaml.load (use yaml.safe_load)"),
    (re.compile(r"\byaml\.(Unsafe|Full)?Loader\b"), "unsafe yaml Loader"),
    (re.compile(r"(?<![.\w])(eval|exec)\("), "eval/exec"),
]
# calls that are safe only with a keyword argument: (call, required keyword)
NEEDS_KEYWORD = [
    (re.compile(r"\btorch\.load\("), re.compile(r"\bweights_only\s*=\s*True\b")),
    (re.compile(r"\b(np|numpy)\.load\("), re.compile(r"\ballow_pickle\s*=\s*False\b")),
]


def call_args(text: str, open_paren: int) -> str:
    """The argument text of the call whose '(' is at `open_paren` (balanced parentheses)."""
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren + 1 : i]
    return text[open_paren + 1 :]


def scan(text: str) -> list[str]:
    found = []

    def hit(pos, why, snippet):
        found.append(f"line {text.count(chr(10), 0, pos) + 1}: {why}: {snippet[:80]!r}")

    for pattern, why in FORBIDDEN:
        for m in pattern.finditer(text):
            hit(m.start(), why, m.group(0))
    for call, keyword in NEEDS_KEYWORD:
        for m in call.finditer(text):
            args = call_args(text, m.end() - 1)
            if not keyword.search(args):
                hit(m.start(), f"{m.group(0)} without {keyword.pattern}", m.group(0) + args + ")")
    return found


def test_scanner_catches_each_forbidden_pattern():
    bad = ["import pickle", "x = marshal.loads(b)", "torch.load(path)", "torch.load(p, map_location='cpu')",
           "np.load(f)", "np.load(f, allow_pickle=True)", "yaml.load(s)", "yaml.load(s, Loader=yaml.UnsafeLoader)",
           "eval(s)", "torch.load(Path(p), map_location='cpu')", "np.load(Path(p))", "exec(code)",
           "from pickle import loads"]
    for line in bad:
        assert scan(line), line
    good = ["torch.load(p, map_location='cpu', weights_only=True)", "np.load(f, allow_pickle=False)",
            "yaml.safe_load(s)", "np.load(\n  Path(f),\n  allow_pickle=False)",
            "model.eval()", "torch.load(Path(p), map_location='cpu', weights_only=True)"]
    for line in good:
        assert not scan(line), line


def test_no_code_executing_deserialisation_in_the_package_sources():
    files = [p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py") if not p.name.endswith("_pb2.py")]
    assert len(files) > 30
    problems = [f"{p.relative_to(REPO)} {hit}" for p in files for hit in scan(p.read_text())]
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- limits


def test_oversized_message_is_resource_exhausted_and_the_server_keeps_serving(servers):
    server = started(with_updates(make_config(), replay={"max_message_mb": 1}), servers)
    big = {"obs/a": np.zeros((2048, 200), np.float32), "action/a": np.zeros(2048, np.int64),
           "policy_version": np.zeros(2048, np.int64)}  # ~1.6 MB > 1 MB
    with ReplayClient(server.address, max_message_mb=64) as client:
        with pytest.raises(ReplayError) as err:
            client.insert("online", big, timeout=2)
        assert err.value.code == "RESOURCE_EXHAUSTED"
        assert client.insert("online", small_batch(3), timeout=2) == 3
    assert server.replay.tables["online"].info().inserted == 3


def test_stream_flood_gets_resource_exhausted_not_oom_and_server_recovers(servers):
    # 2 worker threads -> at most 8 concurrent RPCs (rpc.make_server: 4 per worker); every Sample
    # below blocks on an empty table, so the 9th and later calls must be refused at once.
    server = started(with_updates(make_config(), replay={"wait_timeout_s": 30.0}), servers, max_workers=2)
    codes: list[str] = []
    lock = threading.Lock()
    channel = grpc.insecure_channel(server.address)
    sample = channel.unary_stream("/mamql.v1.ReplayService/Sample", **IDENTITY)
    request = replay_pb2.SampleRequest(table="online", batch_size=1, num_batches=1, timeout_seconds=30).SerializeToString()
    calls = []

    def drain(call):
        try:
            list(call)
            code = "OK"
        except grpc.RpcError as err:
            code = err.code().name
        with lock:
            codes.append(code)

    threads = []
    started_at = time.monotonic()
    for _ in range(200):
        call = sample(request, timeout=10)
        calls.append(call)
        threads.append(threading.Thread(target=drain, args=(call,), daemon=True))
        threads[-1].start()
    time.sleep(0.5)
    exhausted_early = sum(c == "RESOURCE_EXHAUSTED" for c in codes)
    for call in calls:
        call.cancel()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    channel.close()
    assert exhausted_early >= 150, f"only {exhausted_early} of 200 refused: {sorted(set(codes))}"
    assert set(codes) <= {"RESOURCE_EXHAUSTED", "CANCELLED", "DEADLINE_EXCEEDED"}, set(codes)
    assert time.monotonic() - started_at < 15
    with ReplayClient(server.address) as client:  # still serving, nothing inserted by the flood
        # Abandoned waits free their threads within replay.server.WAIT_SLICE_S (not after the 30 s wait).
        deadline = time.monotonic() + 3.0
        while True:
            try:
                assert client.insert("online", small_batch(4), timeout=2) == 4
                break
            except ReplayError as exc:
                assert exc.code == "RESOURCE_EXHAUSTED" and time.monotonic() < deadline, exc
        assert client.sample("online", 2, timeout=2).batch["action/a"].shape == (2,)
        assert client.info()["online"].inserted == 4

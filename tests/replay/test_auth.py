"""Token auth: calls without / with a wrong token are UNAUTHENTICATED; health stays open."""

from __future__ import annotations

import pytest

from mamql.config import AuthConfig, Config
from mamql.metrics import sample_value
from mamql.protos.rpc import Security, health_check
from mamql.replay.client import ReplayClient
from mamql.replay.errors import Unauthenticated
from replay_helpers import make_config, small_batch


@pytest.fixture
def secured(start_server):
    cfg = make_config()
    cfg = Config(**{**cfg.__dict__, "auth": AuthConfig(token="s3cret")})
    return start_server(cfg)


@pytest.mark.parametrize("token", ["", "wrong"])
def test_missing_or_wrong_token_is_unauthenticated(secured, token):
    with ReplayClient(secured.address, Security(token=token)) as client:
        for call in (client.info, lambda: client.insert("online", small_batch(2), timeout=1),
                     lambda: client.sample("online", 1, timeout=1), lambda: client.checkpoint("/nonexistent")):
            with pytest.raises(Unauthenticated) as err:
                call()
            assert err.value.grpc_code.name == "UNAUTHENTICATED"
    assert secured.replay.tables["online"].size == 0
    assert sample_value(secured.registry, "mamql_replay_rejected_requests_total", {"reason": "unauthenticated"}) >= 4


def test_right_token_works_and_health_is_open(secured):
    assert health_check(secured.address)  # no token needed for probes
    with ReplayClient(secured.address, Security(token="s3cret")) as client:
        assert client.insert("online", small_batch(3), timeout=1) == 3
        assert client.info()["online"].size == 3
        with client.writer("online") as writer:
            writer.put(small_batch(2), timeout=1)
            assert writer.flush(timeout=5)
    assert secured.replay.tables["online"].size == 5


def test_auth_off_accepts_plain_clients(start_server):
    server = start_server()
    with ReplayClient(server.address) as client:
        assert client.insert("online", small_batch(2), timeout=1) == 2

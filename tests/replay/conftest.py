"""Fixtures: in-process ReplayServers, the two contract backends, subprocess server cleanup."""

from __future__ import annotations

import signal

import pytest

from mamql.replay.client import ReplayClient
from mamql.replay.local import LocalReplay
from mamql.replay.server import ReplayServer
from replay_helpers import make_config
from mamql.config import Config


@pytest.fixture
def start_server():
    """Start in-process ReplayServers; all stopped at teardown."""
    servers = []

    def start(config: Config | None = None, **kwargs) -> ReplayServer:
        server = ReplayServer(config or make_config(), **kwargs)
        server.start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.stop(grace=0.5, final_checkpoint=False)


@pytest.fixture(params=["local", "grpc"])
def backend(request, start_server):
    """(replay, loader): the same contract for LocalReplay and ReplayClient->ReplayServer."""
    if request.param == "local":
        replay = LocalReplay(make_config().replay, seed=0)
        yield replay, replay.load
        replay.close()
    else:
        server = start_server()
        client = ReplayClient(server.address)
        yield client, server.replay.load
        client.close()


@pytest.fixture
def subprocess_servers():
    procs = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()

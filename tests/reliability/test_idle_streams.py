"""Idle streams stay up, dead peers are still noticed.

Clients ping every 10 s (protos/rpc.channel_options). A server on gRPC's default ping policy
counts early pings as strikes and answers the third strike with GOAWAY ENHANCE_YOUR_CALM
"too_many_pings" (after ~40-50 s), so every idle stream used to drop and reconnect. One test holds
an idle Insert stream, Sample stream and weight subscription open past that point (zero
reconnects), then freezes the serving process (SIGSTOP) and checks that each client notices within
the documented ~20 s (ping every 10 s, ack timeout 10 s). The servers run in a subprocess of their
own so that they can be frozen.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reliability_helpers import child_env, kill_all, wait_until  # noqa: E402

from mamql.actors.weight_subscriber import WeightSubscriber  # noqa: E402
from mamql.metrics import new_registry, sample_value  # noqa: E402
from mamql.replay.client import ReplayClient  # noqa: E402

IDLE_S = 60  # default policy: GOAWAY at the 3rd early ping (~40 s; ~50 s for the replay's two streams)
NOTICE_S = 32  # documented ~20 s (10 s ping interval + 10 s ack timeout) + slack for a loaded box

# A replay whose Sample waits (empty table) outlast the test, plus a weight service that never
# publishes: nothing but keepalive pings crosses either connection.
SERVERS = """
import signal, sys, threading
from pathlib import Path
from mamql.learner.weight_service import WeightStore, serve_weights
from mamql.config import Config, with_updates
from mamql.protos import rpc
from mamql.replay.server import ReplayServer

cfg = with_updates(Config(), replay={"port": 0, "checkpoint_on_exit": False, "wait_timeout_s": 600.0,
                                     "tables": [{"name": "online", "capacity": 100}]},
                   metrics={"enabled": False})
replay = ReplayServer(cfg)
replay_port = replay.start()
weights, _ = rpc.make_server(rpc.Security(), 64)
serve_weights(WeightStore(), weights)
weights_port = rpc.bind(weights, rpc.Security(), "127.0.0.1", 0)
weights.start()
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
Path(sys.argv[1] + ".tmp").write_text(f"{replay_port} {weights_port}")
Path(sys.argv[1] + ".tmp").rename(sys.argv[1])
done.wait()
"""


@pytest.mark.slow
def test_idle_streams_survive_and_a_frozen_server_is_noticed(tmp_path):
    port_file = tmp_path / "ports"
    log = open(tmp_path / "servers.log", "wb")
    proc = subprocess.Popen([sys.executable, "-c", SERVERS, str(port_file)], stdout=log, stderr=subprocess.STDOUT,
                            env=child_env(), start_new_session=True)
    log.close()
    client = writer = stream = subscriber = None
    try:
        wait_until(port_file.exists, 60, "servers up", [proc])
        replay_port, weights_port = (int(p) for p in port_file.read_text().split())
        client = ReplayClient(f"127.0.0.1:{replay_port}")
        writer = client.writer("online")  # opens its Insert stream at once, sends nothing
        stream = client.sample_stream("online", 4, prefetch=1)  # waits on the empty table
        registry = new_registry(process_metrics=False)
        subscriber = WeightSubscriber(f"127.0.0.1:{weights_port}", "idle", registry=registry).start()
        wait_until(lambda: subscriber.connected, 30, "subscriber connected", [proc])

        def weight_reconnects() -> float:
            return sample_value(registry, "mamql_actor_weight_reconnects_total")

        time.sleep(IDLE_S)
        assert (writer.reconnects, stream.reconnects, weight_reconnects()) == (0, 0, 0), \
            (tmp_path / "servers.log").read_text(errors="replace")[-2000:]
        assert subscriber.connected and proc.poll() is None

        # A frozen server answers no pings: every client notices without any call of its own.
        proc.send_signal(signal.SIGSTOP)
        frozen = time.monotonic()
        noticed = {}
        while len(noticed) < 3 and time.monotonic() - frozen < 2 * NOTICE_S:
            for name, lost in (("insert", writer.reconnects > 0), ("sample", stream.reconnects > 0),
                               ("weights", not subscriber.connected)):
                if lost and name not in noticed:
                    noticed[name] = time.monotonic() - frozen
            time.sleep(0.1)
        assert set(noticed) == {"insert", "sample", "weights"}, noticed
        print(f"frozen server noticed after {noticed}")
        assert max(noticed.values()) < NOTICE_S, noticed
    finally:
        kill_all([proc])  # SIGCONT + SIGKILL: clients below give up on a dead server quickly
        if subscriber is not None:
            subscriber.close(timeout=5)
        if stream is not None:
            stream.close()
        if writer is not None:
            writer.close(timeout=2)
        if client is not None:
            client.close()

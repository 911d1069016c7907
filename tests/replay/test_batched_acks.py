"""One ack per k Insert messages (`ack-every` metadata, ReplayWriter(ack_every=k)): cumulative acks,
ack requests, pending acks sent before an error, and the writer's at-least-once semantics unchanged."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from mamql import wire
from mamql.config import Config, ReplayConfig
from mamql.protos import replay_pb2
from mamql.replay.client import Backoff, ReplayClient
from replay_helpers import make_config, small_batch

INSERT = "/mamql.v1.ReplayService/Insert"


def raw_insert(address: str, requests, ack_every: int | None):
    channel = grpc.insecure_channel(address)
    call = channel.stream_stream(INSERT, request_serializer=None, response_deserializer=replay_pb2.InsertAck.FromString)
    metadata = ((wire.ACK_EVERY_METADATA, str(ack_every)),) if ack_every else ()
    return channel, call(requests, metadata=metadata, timeout=10)


def test_the_server_acks_every_k_requests_and_the_rest_at_the_end(start_server):
    server = start_server()
    requests = [wire.encode_insert("online", small_batch(2, 2 * i), i + 1) for i in range(10)]
    channel, call = raw_insert(server.address, iter(requests), ack_every=4)
    acks = [(a.sequence, a.inserted) for a in call]
    channel.close()
    assert acks == [(4, 8), (8, 8), (10, 4)]  # cumulative: each covers the requests since the last
    assert server.replay.tables["online"].size == 20


def test_without_the_metadata_every_request_is_acked_as_before(start_server):
    server = start_server()
    requests = [wire.encode_insert("online", small_batch(2), i + 1) for i in range(3)]
    channel, call = raw_insert(server.address, iter(requests), ack_every=None)
    assert [a.sequence for a in call] == [1, 2, 3]
    channel.close()
    channel, call = raw_insert(server.address, iter([wire.ack_request("online", 4)]), ack_every=None)
    with pytest.raises(grpc.RpcError) as err:  # a batchless request is an error without ack-every
        list(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    channel.close()


def test_an_ack_request_is_answered_at_once_on_an_open_stream(start_server):
    server = start_server()
    import queue

    outbox: queue.Queue = queue.Queue()
    channel, call = raw_insert(server.address, iter(outbox.get, None), ack_every=8)
    outbox.put(wire.encode_insert("online", small_batch(3), 1))
    outbox.put(wire.encode_insert("online", small_batch(3), 2))
    outbox.put(wire.ack_request("online", 2))
    ack = next(call)  # not held back until 8 requests
    assert (ack.sequence, ack.inserted, ack.table_size) == (2, 6, 6)
    outbox.put(wire.encode_insert("online", small_batch(1), 3))
    outbox.put(None)  # half-close: the server acks what is pending
    assert [(a.sequence, a.inserted) for a in call] == [(3, 1)]
    channel.close()


def test_pending_acks_arrive_before_the_error(start_server):
    server = start_server()
    bad = small_batch(2)
    bad["obs/a"][0, 0] = np.nan
    requests = [wire.encode_insert("online", small_batch(2), 1), wire.encode_insert("online", small_batch(2), 2),
                wire.encode_insert("online", bad, 3), wire.encode_insert("online", small_batch(2), 4)]
    channel, call = raw_insert(server.address, iter(requests), ack_every=8)
    acks = []
    with pytest.raises(grpc.RpcError) as err:
        for ack in call:
            acks.append((ack.sequence, ack.inserted))
    channel.close()
    assert acks == [(2, 4)] and err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.replay.tables["online"].size == 4


@pytest.mark.parametrize("ack_every", [3, 100])
def test_writer_with_batched_acks_accounts_exactly(start_server, ack_every):
    server = start_server()
    with ReplayClient(server.address) as client:
        writer = client.writer("online", max_queue_batches=8, ack_every=ack_every)
        seqs = [writer.put(small_batch(5, i * 5), timeout=5) for i in range(10)]
        assert writer.flush(timeout=10)  # the writer asks for what is pending; nothing is held back
        assert (writer.acked_seq, writer.acked_transitions, writer.acked_batches, writer.depth) == (10, 50, 10, 0)
        bad = small_batch(2)
        bad["obs/a"][0, 0] = np.nan
        writer.put(small_batch(2, 50), timeout=5)
        bad_seq = writer.put(bad, timeout=5)
        writer.put(small_batch(2, 52), timeout=5)
        assert writer.close(timeout=10)
    assert seqs == list(range(1, 11))
    assert writer.failed_batches == 1 and writer.errors[0][0] == bad_seq
    assert writer.acked_transitions == 54 and writer.acked_seq == 13
    assert sorted(server.replay.tables["online"].snapshot()["arrays"]["action/a"].tolist()) == list(range(54))


def test_writer_with_batched_acks_resends_what_a_restarted_server_never_acked(start_server):
    first = start_server()
    port = first.port
    client = ReplayClient(first.address)
    writer = client.writer("online", max_queue_batches=6, ack_every=4, backoff=Backoff(0.02, 0.2))
    writer.put(small_batch(2), timeout=5)
    assert writer.flush(timeout=5)
    first.stop(grace=0.2, final_checkpoint=False)
    for i in range(3):  # server away: these stay queued / unacked
        writer.put(small_batch(2, 2 + 2 * i), timeout=1)
    cfg = make_config()
    second = start_server(Config(**{**cfg.__dict__, "replay": ReplayConfig(**{**cfg.replay.__dict__, "port": port})}))
    assert writer.flush(timeout=10)
    assert writer.reconnects >= 1 and writer.acked_seq == 4 and writer.acked_transitions == 8
    steps = second.replay.tables["online"].snapshot()["arrays"]["action/a"]
    assert set(steps.tolist()) == set(range(2, 8))  # at-least-once: every batch the dead server missed
    writer.close()
    client.close()


def test_actor_writer_takes_acks_per_message_from_the_config(start_server):
    from mamql.actors.cli import open_writer
    from mamql.config import ConfigError, validate, with_updates

    server = start_server()
    config = with_updates(Config(), actor={"send_ack_every": 4, "table": "online", "send_queue_batches": 3})
    with ReplayClient(server.address) as client:
        writer = open_writer(client, config)
        assert (writer.ack_every, writer.max_queue_batches, writer.table) == (4, 3, "online")
        for i in range(6):
            writer.put(small_batch(2, 2 * i), timeout=5)
        assert writer.close(timeout=10) and writer.acked_transitions == 12
    with pytest.raises(ConfigError, match="actor.send_ack_every must be >= 1, got 0"):
        validate(with_updates(Config(), actor={"send_ack_every": 0}))

"""Weight service (learner side) and subscriber (actor side) over real gRPC on 127.0.0.1."""

import time

import grpc
import numpy as np
import pytest

from mamql.actors.weight_subscriber import WeightSubscriber
from mamql.learner.weight_service import SERVICE_NAME, WeightStore, serve_weights
from mamql.metrics import new_registry, sample_value
from mamql.weights import split_weights
from mamql.protos import rpc, weights_pb2, weights_pb2_grpc


def start_server(store, port=0, token=""):
    server, health = rpc.make_server(rpc.Security(token=token), max_message_mb=64)
    serve_weights(store, server)
    bound = rpc.bind(server, rpc.Security(), "127.0.0.1", port)
    server.start()
    rpc.set_serving(health, [SERVICE_NAME], True)
    return server, bound


def wait_for(predicate, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def weights(value):
    return {"agent_0/w": np.full((64, 64), value, np.float32), "agent_1/w": np.full(10, value, np.float32)}


def test_subscriber_gets_newest_versions_in_order_and_never_torn():
    store = WeightStore(max_chunk_bytes=4096)  # many chunks per version
    server, port = start_server(store)
    registry = new_registry(process_metrics=False)
    sub = WeightSubscriber(f"127.0.0.1:{port}", "actor-0", registry=registry).start()
    try:
        seen = []
        for v in range(1, 31):
            store.publish(weights(float(v)))
            got = sub.take()
            if got is not None:
                seen.append(got)
            time.sleep(0.005)
        assert wait_for(lambda: sub.versions_received and sub._received_version == 30)
        last = sub.take()
        if last is not None:
            seen.append(last)
        versions = [w.version for w in seen]
        assert versions == sorted(set(versions)) and versions[-1] == 30
        for w in seen:  # every tensor of a version holds that version's value: no torn weights
            assert all(np.all(t == w.version) for t in w.tensors.values())
        sub.applied(seen[-1])
        assert sample_value(registry, "mamql_weights_apply_latency_seconds_count") == 1
    finally:
        sub.close()
        server.stop(0)


def test_subscriber_reconnects_after_the_service_restarts():
    store = WeightStore()
    server, port = start_server(store)
    registry = new_registry(process_metrics=False)
    sub = WeightSubscriber(f"127.0.0.1:{port}", "actor-1", registry=registry, backoff_initial_s=0.05).start()
    try:
        store.publish(weights(1.0))
        assert wait_for(lambda: sub._received_version == 1)
        server.stop(0)
        time.sleep(0.3)
        store2 = WeightStore()
        store2.publish(weights(1.0), version=1)
        store2.publish(weights(2.0), version=2)
        server, _ = start_server(store2, port=port)
        assert wait_for(lambda: sub._received_version == 2, timeout=15)
        assert sample_value(registry, "mamql_actor_weight_reconnects_total") >= 1
        assert sub.take().version == 2
    finally:
        sub.close()
        server.stop(0)


def test_publish_rpc_and_get_latest():
    store = WeightStore()
    server, port = start_server(store)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = weights_pb2_grpc.WeightServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.GetLatest(weights_pb2.GetLatestRequest(), timeout=5))
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            reply = stub.Publish(iter(split_weights(weights(3.0), 4, 1000)), timeout=5)
            assert reply.version == 4 and store.version == 4
            with pytest.raises(grpc.RpcError) as err:  # not newer
                stub.Publish(iter(split_weights(weights(3.0), 4, 1000)), timeout=5)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as err:  # never completed
                stub.Publish(iter(split_weights(weights(3.0), 5, 1000)[:-1]), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            chunks = list(stub.GetLatest(weights_pb2.GetLatestRequest(), timeout=5))
            assert chunks[-1].last and chunks[0].version == 4
    finally:
        server.stop(0)


def test_wrong_token_is_unauthenticated_and_health_stays_open():
    store = WeightStore()
    store.publish(weights(1.0))
    server, port = start_server(store, token="s3cret")
    try:
        address = f"127.0.0.1:{port}"
        assert rpc.health_check(address, SERVICE_NAME)
        with grpc.insecure_channel(address) as channel:
            stub = weights_pb2_grpc.WeightServiceStub(channel)
            for metadata in [(), (("authorization", "Bearer nope"),)]:
                with pytest.raises(grpc.RpcError) as err:
                    list(stub.GetLatest(weights_pb2.GetLatestRequest(), timeout=5, metadata=metadata))
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            ok = list(stub.GetLatest(weights_pb2.GetLatestRequest(), timeout=5,
                                     metadata=(("authorization", "Bearer s3cret"),)))
            assert ok[-1].last
    finally:
        server.stop(0)


def test_subscriber_switches_to_a_new_learner_epoch_at_once():
    """A learner restarted without its checkpoint begins again at version 1 under a new epoch: the
    subscriber (which held version 5 of the old epoch) reconnects and takes it at once."""
    store = WeightStore()
    server, port = start_server(store)
    sub = WeightSubscriber(f"127.0.0.1:{port}", "actor-2", backoff_initial_s=0.05).start()
    try:
        for v in range(1, 6):
            store.publish(weights(float(v)), version=v, epoch=111, alpha=0.5)
        assert wait_for(lambda: (sub._received_epoch, sub._received_version) == (111, 5))
        first = sub.take()
        assert (first.epoch, first.version, first.alpha) == (111, 5, 0.5)
        server.stop(0)
        store = WeightStore()  # the new learner's
        store.publish(weights(-1.0), version=1, epoch=222, alpha=0.25)
        server, _ = start_server(store, port=port)
        assert wait_for(lambda: sub._received_epoch == 222, timeout=15)
        got = sub.take()
        assert (got.epoch, got.version, got.alpha) == (222, 1, 0.25)
        assert all(np.all(t == -1.0) for t in got.tensors.values())
        assert got.supersedes(111, 5) and not got.supersedes(222, 1)
        store.publish(weights(2.0), epoch=222)  # and newer versions of the new epoch follow
        assert wait_for(lambda: sub._received_version == 2)
    finally:
        sub.close()
        server.stop(0)


def test_publish_refuses_a_bad_temperature_or_mixed_epochs():
    store = WeightStore()
    server, port = start_server(store)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = weights_pb2_grpc.WeightServiceStub(channel)
            for alpha in (float("nan"), -1.0, float("inf")):
                chunks = split_weights(weights(1.0), 1, 1000)
                chunks[0].alpha = alpha
                with pytest.raises(grpc.RpcError) as err:
                    stub.Publish(iter(chunks), timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, alpha
            chunks = split_weights(weights(1.0), 1, 1000, epoch=1 << 63)  # actors tag rows with it as int64
            with pytest.raises(grpc.RpcError) as err:
                stub.Publish(iter(chunks), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            chunks = split_weights(weights(1.0), 1, 1000, epoch=7)
            chunks[-1].epoch = 8
            with pytest.raises(grpc.RpcError) as err:
                stub.Publish(iter(chunks), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert store.version == 0
            # another epoch replaces the latest whatever its version number
            assert stub.Publish(iter(split_weights(weights(1.0), 9, 1000, epoch=7)), timeout=5).version == 9
            assert stub.Publish(iter(split_weights(weights(1.0), 1, 1000, epoch=8)), timeout=5).version == 1
            assert (store.epoch, store.version) == (8, 1)
    finally:
        server.stop(0)

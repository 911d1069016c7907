"""`mamql actor`: one actor process streaming transitions to replay and following the learner's weights."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    p = sub.add_parser(
        "actor", help="step environments and stream transitions to replay",
        description="Step actor.num_envs env copies with one batched policy, stream the transitions to the "
                    "replay service and follow the learner's newest weights, until --max-steps or SIGTERM.",
        epilog="examples:\n  mamql actor --replay 127.0.0.1:7100 --weights 127.0.0.1:7200 --env gems\n"
               "  mamql actor --replay 127.0.0.1:7100 --mode expert --env kitchen --max-steps 20000\n"
               "  mamql actor --replay replay.cluster:7100 --weights learner.cluster:7200 --actor-id 3 --num-envs 16")
    add_config_args(p)
    p.add_argument("--replay", required=True, metavar="HOST:PORT", help="replay service address")
    p.add_argument("--weights", default="", metavar="HOST:PORT",
                   help="weight service address (learned mode; without it the actor plays uniformly random)")
    p.add_argument("--actor-id", type=int, default=0,
                   help="this actor's number: its name, env seeds and episode ids (distinct per actor)")
    p.add_argument("--env", default=None,
                   help="env.name: a name from `mamql envs list`, or package.module:ClassOrFactory")
    p.add_argument("--num-envs", type=int, default=None, help="env copies stepped together (actor.num_envs)")
    p.add_argument("--mode", choices=["learned", "expert", "random"], default=None,
                   help="actor.mode: the learner's newest policy, actor.expert, or uniform random")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many transitions (0 = run until SIGTERM)")
    p.add_argument("--port-file", default=None, metavar="FILE",
                   help='write {"grpc": null, "metrics": M} here when the actor starts stepping')
    p.add_argument("--drain-timeout", type=float, default=10.0,
                   help="seconds a stopping actor waits for replay to take and ack its queued transitions")
    p.set_defaults(func=run)


def open_writer(client, config, registry=None):
    """The actor's replay writer as its config says: table, queue bound, one ack per k messages."""
    return client.writer(config.actor.table, max_queue_batches=config.actor.send_queue_batches, registry=registry,
                         ack_every=config.actor.send_ack_every)


def run(args: argparse.Namespace) -> int:
    import signal

    from mamql.actors.actor import Actor
    from mamql.actors.weight_subscriber import WeightSubscriber
    from mamql.cli import config_from_args
    from mamql.log import setup_logging
    from mamql.metrics import MetricsServer, new_registry
    from mamql.portfile import write_port_file
    from mamql.protos.rpc import Security
    from mamql.replay.client import ReplayClient

    config = config_from_args(args, {"env": "env.name", "num_envs": "actor.num_envs", "mode": "actor.mode"})
    name = f"actor-{args.actor_id}"
    log = setup_logging(name, config.run.log_level)
    registry = new_registry()
    metrics = MetricsServer(registry, config.metrics.host, config.metrics.port) if config.metrics.enabled else None
    security = Security.from_config(config.auth)
    client = ReplayClient(args.replay, security, config.replay.max_message_mb)
    writer = open_writer(client, config, registry)
    subscriber = None
    if config.actor.mode == "learned" and args.weights:
        subscriber = WeightSubscriber(args.weights, name, security, config.weights.max_message_mb, registry).start()
    actor = Actor(config, args.actor_id, writer, subscriber, registry)
    # On SIGTERM the actor stops stepping, hands its last batch to the writer and waits (bounded) for
    # replay to ack everything queued; see Actor.run and docs/reliability.md.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: actor.stop())
    if args.port_file:
        write_port_file(args.port_file, None, metrics.port if metrics else None)
    where = f", metrics on port {metrics.port}" if metrics else ""
    print(f"{name}: {config.env.name} x{config.actor.num_envs} ({config.actor.mode}) -> {args.replay}{where}", flush=True)
    stats = actor.run(max_steps=args.max_steps, drain_timeout=args.drain_timeout)
    flushed = writer.close(timeout=args.drain_timeout)
    if subscriber:
        subscriber.close()
    client.close()
    if metrics:
        metrics.close()
    log.info(
        "stopped: %d transitions, %d acked, %d episodes, %d weight versions applied, all acked: %s",
        stats.env_steps, writer.acked_transitions, stats.episodes, stats.versions_applied, flushed,
    )
    return 0

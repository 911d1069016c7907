"""`mamql actor`: one actor process streaming transitions to replay and following the learner's weights."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    p = sub.add_parser("actor", help="step environments and stream transitions to replay")
    add_config_args(p)
    p.add_argument("--replay", required=True, metavar="HOST:PORT", help="replay service address")
    p.add_argument("--weights", default="", metavar="HOST:PORT", help="weight service address (learned mode)")
    p.add_argument("--actor-id", type=int, default=0)
    p.add_argument("--env", default=None, help="shortcut for --set env.name=...")
    p.add_argument("--num-envs", type=int, default=None, help="shortcut for --set actor.num_envs=...")
    p.add_argument("--mode", choices=["learned", "expert", "random"], default=None, help="shortcut for actor.mode")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many transitions (0 = run until SIGTERM)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from actors.actor import Actor
    from actors.weight_subscriber import WeightSubscriber
    from mamql.cli import config_from_args
    from mamql.log import setup_logging
    from mamql.metrics import MetricsServer, new_registry
    from protos.rpc import Security
    from replay.client import ReplayClient

    config = config_from_args(args, {"env": "env.name", "num_envs": "actor.num_envs", "mode": "actor.mode"})
    name = f"actor-{args.actor_id}"
    log = setup_logging(name, config.run.log_level)
    registry = new_registry()
    metrics = MetricsServer(registry, config.metrics.host, config.metrics.port) if config.metrics.enabled else None
    security = Security.from_config(config.auth)
    client = ReplayClient(args.replay, security, config.replay.max_message_mb)
    writer = client.writer(config.actor.table, max_queue_batches=config.actor.send_queue_batches, registry=registry)
    subscriber = None
    if config.actor.mode == "learned" and args.weights:
        subscriber = WeightSubscriber(args.weights, name, security, config.weights.max_message_mb, registry).start()
    actor = Actor(config, args.actor_id, writer, subscriber, registry)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: actor.stop())
    where = f", metrics on port {metrics.port}" if metrics else ""
    print(f"{name}: {config.env.name} x{config.actor.num_envs} ({config.actor.mode}) -> {args.replay}{where}", flush=True)
    stats = actor.run(max_steps=args.max_steps)
    flushed = writer.close(timeout=10.0)
    if subscriber:
        subscriber.close()
    client.close()
    if metrics:
        metrics.close()
    log.info(
        "stopped: %d transitions, %d episodes, %d weight versions applied, all acked: %s",
        stats.env_steps, stats.episodes, stats.versions_applied, flushed,
    )
    return 0

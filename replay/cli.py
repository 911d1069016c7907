"""`mamql replay`: run the replay service until SIGTERM/SIGINT, then shut down cleanly (exit 0)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    p = sub.add_parser(
        "replay", help="serve replay tables over gRPC",
        description="Serve the replay tables of the config (replay.tables) over gRPC until SIGTERM/SIGINT, "
                    "then write a final checkpoint and exit 0.",
        epilog="examples:\n  mamql replay\n"
               "  mamql replay --set replay.port=0 --port-file replay-ports.json\n"
               "  mamql replay --restore runs/NAME/checkpoints/replay --grace 10")
    add_config_args(p)
    p.add_argument("--restore", default=None, metavar="DIR", help="load a replay checkpoint directory before serving")
    p.add_argument("--port-file", default=None, metavar="FILE",
                   help='write {"grpc": N, "metrics": M} here once bound (use with port 0)')
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight RPCs get to finish on shutdown")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from mamql.cli import config_from_args
    from mamql.log import setup_logging
    from mamql.portfile import write_port_file
    from mamql.replay.server import ReplayServer

    import sys

    from mamql.replay.checkpoint import CheckpointError

    config = config_from_args(args)
    log = setup_logging("replay", config.run.log_level)
    try:
        server = ReplayServer(config, restore=args.restore)
        port = server.start()
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"mamql replay: error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.set())
    # SIGUSR1 (sent by `mamql local` before it stops the actors): admit inserts past the rate limiter,
    # so the actors' queued batches drain into the replay instead of being dropped.
    signal.signal(signal.SIGUSR1, lambda *_: server.replay.drain())
    if args.port_file:
        write_port_file(args.port_file, port, server.metrics_server.port if server.metrics_server else None)
    metrics = f", metrics on port {server.metrics_server.port}" if server.metrics_server else ""
    print(f"replay listening on {config.replay.host}:{port}{metrics}", flush=True)
    while not stop.wait(1.0):
        pass
    log.info("signal received: shutting down")
    path = server.stop(grace=args.grace)
    if path:
        print(f"replay final checkpoint: {path}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m mamql.replay.cli [options]`: the same as `mamql replay`, without loading other commands."""
    import sys

    parser = argparse.ArgumentParser(prog="python -m mamql.replay.cli")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

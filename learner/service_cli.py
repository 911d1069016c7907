"""`mamql learner`: the learner process of the distributed system (see learner/service.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from mamql.cli import add_config_args

    p = sub.add_parser(
        "learner", help="train from a replay service and publish weights to actors",
        description="Sample expert and online batches from a replay service, update the critics and serve "
                    "versioned policy weights to the actors (the weight service), until --steps or SIGTERM.",
        epilog="examples:\n  mamql learner --replay 127.0.0.1:7100 --demos demos.npz --steps 300\n"
               "  mamql learner --replay 127.0.0.1:7100 --set learner.algo=soft-q --set weights.port=0 "
               "--port-file learner-ports.json\n"
               "  mamql learner --replay replay.cluster:7100 --demos data/gems-20k --set run.name=gems-1 --resume")
    add_config_args(p)
    p.add_argument("--replay", required=True, metavar="HOST:PORT", help="replay service address")
    p.add_argument("--demos", default=None, metavar="PATH",
                   help="expert demonstrations, a .npz (mamql demos collect) or a dataset directory (mamql collect); "
                        "every algo but soft-q needs them")
    p.add_argument("--steps", type=int, default=None,
                   help="stop at this many updates, resume included; 0 = run until SIGTERM (default: learner.steps)")
    p.add_argument("--resume", action="store_true", help="continue from the run's latest learner checkpoint")
    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help="where checkpoints and metrics.jsonl go (default: <run.root>/<run.name>)")
    p.add_argument("--port-file", default=None, metavar="FILE",
                   help='write {"grpc": N, "metrics": M} here once serving (use with port 0)')
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import signal

    from mamql.learner.service import LearnerService
    from mamql.cli import config_from_args
    from mamql.log import setup_logging
    from mamql.portfile import write_port_file

    config = config_from_args(args)
    log = setup_logging("learner", config.run.log_level)
    service = LearnerService(config, args.replay, args.demos, run_dir=args.run_dir)
    if args.resume:
        service.resume()
    port = service.start()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: service.stop())
    metrics_port = service.metrics_server.port if service.metrics_server else None
    if args.port_file:
        write_port_file(args.port_file, port, metrics_port)
    where = f", metrics on port {metrics_port}" if metrics_port else ""
    print(f"learner: weights on {config.weights.host}:{port}{where}, device {service.device}", flush=True)
    steps = config.learner.steps if args.steps is None else args.steps
    try:
        done = service.run(steps)
    finally:
        service.close()
    log.info("stopped after %d updates at step %d, weight version %d", done, service.updater.step, service.version)
    return 0

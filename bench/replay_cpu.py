"""Where the replay data path's CPU goes: CPU time per 256-transition message of the replay server and
of its one client, mamql vs the bare-bytes ceiling, P1 insert and sample; prints ONE JSON line.

Why: on 2 cores the server and the client share the machine, so a system's rate is bounded by
their summed CPU per message; this says how much of mamql's gap to bare gRPC is storage and codec
work and how much is gRPC's own transport (bench/replay.py measures the rates side by side).
With `--profile DIR` and py-spy on PATH it also writes py-spy's collapsed stacks of both processes
(DIR/<action>-<server|client>.txt) for the mamql phases.

    python bench/replay_cpu.py [--seconds 12] [--profile DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPLAY_BENCH = HERE / "replay.py"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(system: str, action: str, server: subprocess.Popen, address: str, seconds: float, env: dict,
            profile: Path | None) -> dict:
    worker = subprocess.Popen([sys.executable, str(REPLAY_BENCH), "--work", system, "--action", action,
                               "--payload", "P1", "--address", address, "--seconds", str(seconds)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if worker.stdout.readline().strip() != "ready":
        worker.kill()
        raise RuntimeError(f"{system} {action} worker failed to start")
    server0, client0 = cpu_seconds(server.pid), cpu_seconds(worker.pid)
    worker.stdin.write("go\n")
    worker.stdin.flush()
    spies = []
    if profile is not None:
        for role, pid in (("server", server.pid), ("client", worker.pid)):
            spies.append(subprocess.Popen(
                ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds * 0.75)), "--rate", "200",
                 "--format", "raw", "--nonblocking", "-o", str(profile / f"{action}-{role}.txt")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    client = client0
    while worker.poll() is None:  # the worker's CPU, read until it exits
        try:
            client = cpu_seconds(worker.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    out, _ = worker.communicate(timeout=seconds + 300)
    for spy in spies:
        spy.wait()
    result = json.loads(out.strip().splitlines()[-1])
    messages = max(result["messages"], 1)
    return {"transitions_per_s": round(result["transitions"] / result["seconds"]), "messages": result["messages"],
            "server_cpu_ms_per_msg": round(1000 * (cpu_seconds(server.pid) - server0) / messages, 3),
            "client_cpu_ms_per_msg": round(1000 * (client - client0) / messages, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--profile", help="folder for py-spy's collapsed stacks (needs py-spy on PATH)")
    args = parser.parse_args()
    profile = Path(args.profile) if args.profile else None
    if profile is not None:
        if shutil.which("py-spy") is None:
            parser.error("--profile needs py-spy on PATH (pip install py-spy)")
        profile.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="33554432", MALLOC_TRIM_THRESHOLD_="134217728",
               PYTHONPATH=os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")])))
    out: dict = {"bench": "replay_cpu", "payload": "P1", "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        for system in ("bare", "mamql"):
            port_file = f"{tmp}/port-{system}"
            server = subprocess.Popen([sys.executable, str(REPLAY_BENCH), "--serve", system, "--port-file", port_file],
                                      env=env)
            try:
                deadline = time.monotonic() + 120
                while not os.path.exists(port_file):
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{system} server did not start")
                    time.sleep(0.05)
                address = f"127.0.0.1:{Path(port_file).read_text()}"
                for action in ("insert", "sample"):
                    out[f"{system}_{action}"] = measure(system, action, server, address, args.seconds, env,
                                                        profile if system == "mamql" else None)
            finally:
                server.terminate()
                server.wait(timeout=60)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

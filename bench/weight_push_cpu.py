"""Where the paper-size weight push's CPU goes: bench/system.py's push (42 MB fp32 Gems critics to 4
subscriber processes, 40 versions, 4 per second) with the CPU of the publisher and of each subscriber
read over 8 s of publishing, and py-spy's collapsed stacks of the publisher and one subscriber
(OUT/weight-push-{publisher,subscriber}.txt; needs py-spy on PATH); prints ONE JSON line.

Why: on 2 cores the push is bounded by the summed CPU of one version's copies, so this says how much
of it is gRPC's transport and how much our codec and the subscribers' apply.

    python bench/weight_push_cpu.py [OUT]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
WINDOW_S = 8.0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    import system  # bench/system.py

    from mamql.envs.registry import env_spec
    from mamql.learner.networks import build_critics
    from mamql.learner.policy import flatten_weights
    from mamql.learner.service import weights_to_numpy

    out_dir = sys.argv[1] if len(sys.argv) > 1 else "."
    arrays, dtypes = weights_to_numpy(flatten_weights(build_critics(env_spec("gems"))), "float32")
    spawn, subscribers = subprocess.Popen, []

    def recording_popen(*args, **kwargs):  # bench/system.py starts the subscribers with subprocess.Popen
        proc = spawn(*args, **kwargs)
        subscribers.append(proc)
        return proc

    system.subprocess.Popen = recording_popen
    result: dict = {}

    def watch() -> None:
        time.sleep(5)  # the subscribers connect for 4 s, then publishing begins
        me = os.getpid()
        sub0, pub0 = {p.pid: cpu_seconds(p.pid) for p in subscribers}, cpu_seconds(me)
        spies = [spawn(["py-spy", "record", "--pid", str(pid), "--duration", str(int(WINDOW_S)), "--rate", "200",
                        "--format", "raw", "--nonblocking", "-o", os.path.join(out_dir, f"weight-push-{name}.txt")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, pid in (("publisher", me), ("subscriber", subscribers[0].pid))]
        time.sleep(WINDOW_S)
        result["subscriber_cpu_s_per_s"] = [round((cpu_seconds(p.pid) - sub0[p.pid]) / WINDOW_S, 4) for p in subscribers]
        result["publisher_cpu_s_per_s"] = round((cpu_seconds(me) - pub0) / WINDOW_S, 4)
        for spy in spies:
            spy.wait()

    watcher = threading.Thread(target=watch)
    watcher.start()
    push = system._push(arrays, dtypes, 40)
    watcher.join()
    print(json.dumps({"bench": "weight_push_cpu", **push, **result}))


if __name__ == "__main__":
    main()

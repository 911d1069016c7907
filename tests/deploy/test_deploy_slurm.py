"""The sbatch script on a real one-node Slurm (munged, slurmctld, slurmd started here on loopback):
the job runs replay, learner and actors as srun steps, finishes its steps, writes a checkpoint,
metrics and per-task logs, and MAMQL_ENV reaches every process; a second job is scancelled and tears
down cleanly."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import free_port
from mamql.learner.demos import load_demos
from system_tools import ensure_debian_packages, missing

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "deploy" / "slurm" / "mamql.sbatch"
SBIN = ["/usr/sbin", "/sbin", "/usr/bin"]
TINY_CONFIG = """\
learner: {hidden: [32], batch_size: 32, log_every: 5, checkpoint_every: 10}
weights: {publish_every: 2}
actor: {num_envs: 2, send_batch_size: 32}
replay:
  tables:
    - {name: online, capacity: 5000, min_size_to_sample: 64, samples_per_insert: 2.0, error_buffer: 4000.0}
"""


def which(name: str) -> str:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SBIN])) or name


def stop_pid(proc: subprocess.Popen, timeout=20) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    ensure_debian_packages(["slurm-wlm", "munge"], ["slurmctld", "slurmd", "sbatch", "munged"])
    if not Path("/etc/munge/munge.key").exists():
        missing("no /etc/munge/munge.key (the munge package creates it; reinstall munge or run mungekey)")
    if os.geteuid() != 0:
        pytest.skip("the one-machine Slurm cluster runs its daemons as root")
    tmp = tmp_path_factory.mktemp("slurm")
    node = socket.gethostname().split(".")[0]
    sock = tmp / "munge.socket"
    for d in ("state", "spool"):
        (tmp / d).mkdir()
    conf = tmp / "slurm.conf"
    conf.write_text(f"""ClusterName=mamqltest
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/slurmctld.pid
SlurmdPidFile={tmp}/slurmd.pid
SlurmctldLogFile={tmp}/slurmctld.log
SlurmdLogFile={tmp}/slurmd.log
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
KillWait=30
InactiveLimit=0
MinJobAge=300
NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
""")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs = []
    try:
        munged = subprocess.Popen([which("munged"), "--foreground", "--force", f"--socket={sock}",
                                   f"--pid-file={tmp}/munged.pid", f"--log-file={tmp}/munged.log",
                                   f"--seed-file={tmp}/munged.seed", "--key-file=/etc/munge/munge.key"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        procs.append(munged)
        deadline = time.time() + 20
        while not sock.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert sock.exists(), "munged did not create its socket"
        ctld = subprocess.Popen([which("slurmctld"), "-D", "-i", "-f", str(conf)], env=env,
                                stdout=(tmp / "slurmctld.out").open("w"), stderr=subprocess.STDOUT)
        procs.append(ctld)
        time.sleep(1)
        slurmd = subprocess.Popen([which("slurmd"), "-D", "-f", str(conf), "-N", node], env=env,
                                  stdout=(tmp / "slurmd.out").open("w"), stderr=subprocess.STDOUT)
        procs.append(slurmd)
        deadline = time.time() + 60
        state = ""
        while time.time() < deadline:
            for p in procs:
                assert p.poll() is None, f"{p.args[0]} exited: {(tmp / 'slurmctld.log').read_text()[-2000:] if (tmp / 'slurmctld.log').exists() else ''}"
            state = subprocess.run([which("sinfo"), "-h", "-N", "-o", "%T"], env=env, capture_output=True,
                                   text=True).stdout.strip()
            if state == "idle":
                break
            time.sleep(1)
        assert state == "idle", f"node state {state!r}; slurmd log:\n{(tmp / 'slurmd.log').read_text()[-2000:]}"
        yield {"env": env, "tmp": tmp, "node": node}
    finally:
        for p in reversed(procs):  # slurmd, slurmctld, munged, each by its PID
            stop_pid(p)


def job_state(env, job_id) -> str:
    out = subprocess.run([which("scontrol"), "show", "job", job_id], env=env, capture_output=True, text=True).stdout
    match = re.search(r"JobState=(\w+)", out)
    return match.group(1) if match else "GONE"


def submit(slurm, tmp, steps: int, env_name: str | None = None) -> str:
    config = tmp / "tiny.yaml"
    config.write_text(TINY_CONFIG)
    env = {
        **slurm["env"],
        "MAMQL": f"{sys.executable} -m mamql.cli",
        "MAMQL_PYTHON": sys.executable,
        "MAMQL_STEPS": str(steps),
        "MAMQL_ACTORS_PER_NODE": "2",
        "MAMQL_RUN_ROOT": str(tmp / "runs"),
        "MAMQL_DEMO_TRANSITIONS": "500",
        "MAMQL_BIND": "127.0.0.1",
        "MAMQL_HEAD_ADDR": "127.0.0.1",
        "MAMQL_REPLAY_PORT": str(free_port()),
        "MAMQL_WEIGHTS_PORT": str(free_port()),
        "MAMQL_METRICS_PORT": str(20000 + os.getpid() % 20000),
        "MAMQL_CONFIG": str(config),
        "MAMQL_EXTRA": "--set run.log_level=INFO",
        "PYTHONPATH": str(ROOT),
    }
    if env_name:
        env["MAMQL_ENV"] = env_name
    out = subprocess.run([which("sbatch"), "--parsable", "--nodes=1", f"--output={tmp}/job-%j.out",
                          f"--chdir={tmp}", str(SBATCH)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().split(";")[0]


def wait_state(env, job_id, states, timeout) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = job_state(env, job_id)
        if state in states:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} still {job_state(env, job_id)} after {timeout}s")


def test_sbatch_job_trains_and_finishes(slurm, tmp_path):
    # kitchen, not the config's default gems: a process left on gems would not fit the others' shapes
    job = submit(slurm, tmp_path, steps=30, env_name="kitchen")
    state = wait_state(slurm["env"], job, {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"}, 170)
    out = (tmp_path / f"job-{job}.out").read_text()
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    logs = run_dir / "logs"
    detail = out + "".join(f"\n--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(logs.glob("*.log")))
    assert state == "COMPLETED", detail
    assert "learner finished (exit 0)" in out and "stopped" in out, detail
    assert {"demos.log", "replay.log", "learner.log", "actor-0.log", "actor-1.log"} <= {p.name for p in logs.iterdir()}
    assert (run_dir / "checkpoints" / "learner" / "latest.pt").exists(), detail
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert metrics and "agent_0/loss" in metrics[-1]
    assert "weights on 127.0.0.1" in (logs / "learner.log").read_text()
    assert load_demos(run_dir / "demos.npz")[1]["env"] == "kitchen"  # MAMQL_ENV reached demo collection,
    for actor in ("actor-0.log", "actor-1.log"):  # the actors,
        assert "kitchen x2" in (logs / actor).read_text(), detail
    # and the learner, which trained a kitchen-shaped critic on those demos and that data (COMPLETED above)
    token = run_dir / "auth-token"
    assert token.exists() and (token.stat().st_mode & 0o077) == 0  # generated, private
    targets = json.loads((run_dir / "prometheus-targets.json").read_text())
    assert sorted(t["labels"]["component"] for t in targets) == ["actor", "actor", "learner", "replay"]


def test_scancel_tears_everything_down(slurm, tmp_path):
    job = submit(slurm, tmp_path, steps=0)  # 0 = train until cancelled
    env = slurm["env"]
    run_dir = tmp_path / "runs" / f"slurm-{job}"
    deadline = time.time() + 150
    while not (run_dir / "prometheus-targets.json").exists():
        assert time.time() < deadline, (tmp_path / f"job-{job}.out").read_text() if (tmp_path / f"job-{job}.out").exists() else "no output"
        assert job_state(env, job) in ("PENDING", "RUNNING", "CONFIGURING"), job_state(env, job)
        time.sleep(1)
    time.sleep(3)
    subprocess.run([which("scancel"), job], env=env, check=True, timeout=30)
    wait_state(env, job, {"CANCELLED", "COMPLETED", "FAILED"}, 90)
    out = (tmp_path / f"job-{job}.out").read_text()
    assert "signal received" in out and "stopped" in out, out
    # no mamql process of this job survives
    time.sleep(2)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert f"run.name=slurm-{job}" not in ps, ps

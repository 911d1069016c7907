"""Helpers for tests/reliability: subprocesses by PID, /metrics scraping, certificates, demos.

A uniquely named module (conftest names clash across test folders); test files put this folder on
sys.path themselves.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import free_port, wait_until  # noqa: F401  (re-exported for the tests)
from mamql.supervisor import scrape, total  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[2]

# Tiny and fast: 32-unit critics, small batches, frequent publishes and checkpoints.
FAST = [
    "--set", "env.name=gems", "--set", "learner.hidden=[32]", "--set", "learner.batch_size=32",
    "--set", "weights.publish_every=2", "--set", "learner.log_every=5", "--set", "learner.checkpoint_every=10",
    "--set", "learner.torch_threads=1", "--set", "actor.num_envs=2", "--set", "actor.send_batch_size=32",
    "--set", "replay.tables=[{name: online, capacity: 20000, min_size_to_sample: 64, samples_per_insert: 0.0}]",
]


def child_env(**extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **extra}


def spawn(args: list[str], log_path: Path, prefix: list[str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """`python -m mamql.cli ARGS` (optionally under `prefix`, e.g. `ip netns exec NS`), output to a log."""
    cmd = [*(prefix or []), sys.executable, "-m", "mamql.cli", *args]
    out = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
                                cwd=cwd or log_path.parent, start_new_session=True)
    finally:
        out.close()


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
    """Signal one process by PID and wait (SIGKILL after `timeout`); returns its exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            return None
    return proc.returncode


def kill_all(procs) -> None:
    for p in procs:
        if p is not None and p.poll() is None:
            try:
                os.kill(p.pid, signal.SIGCONT)  # a SIGSTOPped process must run to die cleanly
                os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)


def read_port(path: Path, timeout: float = 60.0, proc=None) -> int:
    """The gRPC port a server wrote to its --port-file."""
    from mamql.portfile import read_port_file

    return wait_until(lambda: (read_port_file(path) or {}).get("grpc"), timeout, f"port file {path}",
                      [proc] if proc else ())


def spawn_reporting(procs: dict, name: str, args: list[str], log_path: Path, timeout: float = 120.0) -> dict:
    """spawn() as procs[name] with --port-file; returns the ports it bound ({"grpc", "metrics"}) once
    reported. Pass port 0 (or a port it held before a restart): nothing picks a port up front."""
    from mamql.portfile import read_port_file

    port_file = log_path.with_suffix(".ports.json")
    port_file.unlink(missing_ok=True)
    procs[name] = spawn([*args, "--port-file", str(port_file)], log_path)
    return wait_until(lambda: read_port_file(port_file), timeout, f"{name}'s port file", [procs[name]])


def metric(port: int, name: str, host: str = "127.0.0.1", **labels) -> float:
    return total(scrape(f"http://{host}:{port}/metrics"), name, **labels)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- certificates


def make_certs(directory: Path) -> dict[str, Path]:
    """A self-signed CA, a server cert for localhost/127.0.0.1 and a client cert, all signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key, path):
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("mamql test CA")).issuer_name(name("mamql test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    out = {"ca": directory / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for who in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(f"mamql {who}")).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        out[f"{who}_cert"] = directory / f"{who}.pem"
        out[f"{who}_key"] = directory / f"{who}.key"
        out[f"{who}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        write_key(key, out[f"{who}_key"])
    return out

"""Is a listen address free? Asked by every service before it binds, so a busy port is one line.

Why a probe: gRPC servers bind with SO_REUSEPORT, so a second `mamql replay` on a port another one
holds used to start silently and share its connections; a port held by anything else made gRPC
raise a RuntimeError that asked for GRPC_VERBOSITY. The probe binds a plain socket without
SO_REUSEPORT (with SO_REUSEADDR, as the servers bind, so connections in TIME_WAIT from an earlier
run do not count), which fails whenever anything listens there.
"""

from __future__ import annotations

import errno
import socket

from mamql.config import InputError


class PortInUse(InputError):
    """A configured port that another process holds (or that cannot be bound on that host)."""


def check_port_free(host: str, port: int, key: str) -> None:
    """Raise PortInUse when `host:port` cannot be bound now; port 0 (any free port) always passes.
    `key` names the config value to change (e.g. "replay.port")."""
    if not port:
        return
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUse(f"{key}: cannot listen on {where}: {exc.strerror}") from None
    for family, kind, proto, _, address in infos:  # every address gRPC would bind (localhost: v4 and v6)
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(f"port {where} is already in use ({key}; 0 picks any free port)") from None
                raise PortInUse(f"{key}: cannot listen on {where}: {exc.strerror or exc}") from None

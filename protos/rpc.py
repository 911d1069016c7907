"""gRPC plumbing every mamql service and client shares: limits, auth, TLS, health, shutdown.

Kept beside the generated contracts so that the core (mamql/) stays free of grpc imports.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

log = logging.getLogger("mamql.rpc")

AUTH_HEADER = "authorization"


def message_options(max_message_mb: int) -> list[tuple[str, int]]:
    limit = int(max_message_mb) * 1024 * 1024
    return [
        ("grpc.max_send_message_length", limit),
        ("grpc.max_receive_message_length", limit),
    ]


KEEPALIVE_TIME_MS = 10_000  # both sides ping an idle connection this often
KEEPALIVE_TIMEOUT_MS = 10_000  # and drop it when the ack takes longer: a dead peer is noticed in ~20 s


def _keepalive_options() -> list[tuple[str, int]]:
    return [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        # gRPC core (1.85 here) waits this long for a ping ack (default 1 min), whatever keepalive_timeout_ms
        # says: without it a frozen peer went unnoticed for ~70 s (tests/reliability/test_idle_streams.py)
        ("grpc.http2.ping_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def channel_options(max_message_mb: int) -> list[tuple[str, int]]:
    """Message limits plus keepalive, so a dead server is noticed within ~20 s even on idle streams."""
    return message_options(max_message_mb) + _keepalive_options()


def server_options(max_message_mb: int) -> list[tuple[str, int]]:
    """Message limits plus a ping policy that accepts the clients' keepalive, for every grpc.server.

    gRPC servers by default allow one ping per 5 minutes without data and answer the third early
    one with GOAWAY ENHANCE_YOUR_CALM "too_many_pings": every idle stream (an actor's Insert while
    replay waits, a subscription between versions) was dropped after ~40 s and reconnected. Pings
    at half the clients' interval are welcome; faster ones still earn strikes. The server pings its
    clients too, so a stream held by a vanished client frees its worker thread within ~20 s."""
    return message_options(max_message_mb) + _keepalive_options() + [
        # (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS; gRPC ignores misspelt names silently)
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_ping_strikes", 2),
    ]


@dataclass(frozen=True)
class Security:
    """Token and TLS settings resolved from the `auth` config section."""

    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""

    @classmethod
    def from_config(cls, auth) -> "Security":
        token = auth.token
        if auth.token_file:
            token = Path(auth.token_file).read_text().strip()
        return cls(token=token, tls_cert=auth.tls_cert, tls_key=auth.tls_key, tls_ca=auth.tls_ca)

    def check_bind(self, host: str, insecure_no_auth: bool) -> None:
        """Refuse to serve without a token on a non-loopback address."""
        if self.token or is_loopback(host):
            return
        if not insecure_no_auth:
            raise ValueError(f"refusing to serve on {host} without auth.token (or auth.insecure_no_auth)")
        log.warning("serving on %s WITHOUT authentication (auth.insecure_no_auth=true)", host)

    def call_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((AUTH_HEADER, f"Bearer {self.token}"),) if self.token else ()


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"  # "" binds every interface: not loopback
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Rejects calls without `authorization: Bearer <token>` with UNAUTHENTICATED (constant-time compare).

    Health checks stay open so that Kubernetes probes need no secret.
    """

    OPEN_PREFIXES = ("/grpc.health.v1.Health/",)

    def __init__(self, token: str, on_reject: Callable[[str], None] | None = None):
        self._expected = f"Bearer {token}".encode()
        self._on_reject = on_reject

    def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        if method.startswith(self.OPEN_PREFIXES):
            return continuation(handler_call_details)
        supplied = dict(handler_call_details.invocation_metadata or ()).get(AUTH_HEADER, "")
        if hmac.compare_digest(supplied.encode(), self._expected):
            return continuation(handler_call_details)
        log.warning("rejected unauthenticated call to %s", method)
        if self._on_reject:
            self._on_reject(method)
        return _deny(continuation(handler_call_details))


def _deny(handler):
    def abort(request_or_iterator, context):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong auth token")

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class _Malformed:
    """Stands in for a request that is not a valid protobuf message (see MalformedRequestInterceptor)."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def _safe_deserializer(deserialize):
    def safe(data: bytes):
        try:
            return deserialize(data)
        except Exception as exc:  # noqa: BLE001 - any parse failure is the client's fault
            return _Malformed(exc)

    return safe


def _reject_malformed(context, request: _Malformed):
    log.warning("malformed request: %s", request.error)
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid protobuf message")


def _checked(request_iterator, context):
    for request in request_iterator:
        if isinstance(request, _Malformed):
            _reject_malformed(context, request)
        yield request


class MalformedRequestInterceptor(grpc.ServerInterceptor):
    """INVALID_ARGUMENT (instead of grpc's INTERNAL) for requests that do not parse as protobuf.

    grpc applies the request deserializer before any servicer code runs and answers a parse error
    with INTERNAL "Exception deserializing request!", which reads as a server bug. This interceptor
    makes the deserializer return a marker instead, and the handler refuses it as the client's error.
    (Found by tests/reliability/test_reliability_fuzz.py.)
    """

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        fields = dict(request_deserializer=_safe_deserializer(handler.request_deserializer),
                      response_serializer=handler.response_serializer)
        if handler.request_streaming:
            behavior = handler.stream_stream or handler.stream_unary

            def streaming(request_iterator, context):
                return behavior(_checked(request_iterator, context), context)

            make = (grpc.stream_stream_rpc_method_handler if handler.response_streaming
                    else grpc.stream_unary_rpc_method_handler)
            return make(streaming, **fields)
        behavior = handler.unary_stream or handler.unary_unary

        def unary(request, context):
            if isinstance(request, _Malformed):
                _reject_malformed(context, request)
            return behavior(request, context)

        make = grpc.unary_stream_rpc_method_handler if handler.response_streaming else grpc.unary_unary_rpc_method_handler
        return make(unary, **fields)


def make_server(
    security: Security,
    max_message_mb: int,
    max_workers: int = 32,
    on_reject: Callable[[str], None] | None = None,
) -> tuple[grpc.Server, health.HealthServicer]:
    """A thread-pool server with message limits, auth when a token is set, and grpc.health.v1."""
    interceptors = [TokenAuthInterceptor(security.token, on_reject)] if security.token else []
    interceptors.append(MalformedRequestInterceptor())
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers),
        interceptors=interceptors,
        options=server_options(max_message_mb),
        maximum_concurrent_rpcs=max_workers * 4,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    return server, health_servicer


def bind(server: grpc.Server, security: Security, host: str, port: int) -> int:
    """Bind host:port (0 = a free port) with TLS when configured; returns the bound port."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if security.tls_cert:
        key = Path(security.tls_key).read_bytes()
        cert = Path(security.tls_cert).read_bytes()
        ca = Path(security.tls_ca).read_bytes() if security.tls_ca else None
        creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=bool(ca))
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"could not bind gRPC server to {address}")
    return bound


def set_serving(health_servicer: health.HealthServicer, services: list[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in [""] + services:
        health_servicer.set(name, status)


def make_channel(
    address: str,
    security: Security,
    max_message_mb: int,
    tls_client_cert: str = "",
    tls_client_key: str = "",
) -> grpc.Channel:
    """A channel to `address` (host:port) with the same limits, TLS when a CA is configured."""
    options = channel_options(max_message_mb)
    if security.tls_ca and security.tls_cert and not tls_client_cert:
        # mTLS deployments give every process one cert/key signed by the CA: it serves with it and
        # presents it as a client certificate (without this no mamql client could reach an mTLS server).
        tls_client_cert, tls_client_key = security.tls_cert, security.tls_key
    if security.tls_ca or security.tls_cert:
        ca = Path(security.tls_ca or security.tls_cert).read_bytes()
        key = Path(tls_client_key).read_bytes() if tls_client_key else None
        cert = Path(tls_client_cert).read_bytes() if tls_client_cert else None
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        return grpc.secure_channel(address, creds, options=options)
    return grpc.insecure_channel(address, options=options)


def health_check(address: str, service: str = "", timeout: float = 2.0, security: Security | None = None) -> bool:
    """True when the server at `address` answers SERVING for `service` (TLS when `security` has a CA)."""
    security = security or Security()
    with make_channel(address, security, 4, security.tls_cert, security.tls_key) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


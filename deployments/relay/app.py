"""The Alertmanager relay: an ASGI app that turns webhook alerts into Prefect events.

Prefect's self-hosted server has deployment triggers but no inbound webhooks, and Alertmanager
only posts its own webhook format. The relay bridges them:

    Alertmanager --POST /alerts (Bearer token)--> relay --POST /api/events--> Prefect server
                                                                  `-> deployment triggers start runbooks

Endpoints: `POST /alerts` (the webhook), `GET /health` (liveness), `GET /ready` (the Prefect API
answers), `GET /metrics` (Prometheus counters). Start it with `vibeops relay` or `serve(...)`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from deployments.relay.mapping import Deduplicator, alert_to_event, parse_webhook
from tasks.errors import AlertPayloadInvalid, ConfigurationError, EventDeliveryError

logger = logging.getLogger("vibeops.relay")

DEFAULT_PATH = "/alerts"
DEFAULT_DEDUPE_WINDOW_SECONDS = 300.0
MAX_BODY_BYTES = 1024 * 1024
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class RelaySettings:
    """How the relay authenticates senders and reaches Prefect.

    Args:
        token: the bearer token Alertmanager sends (`http_config.authorization.credentials`).
        prefect_api_url: the Prefect API, e.g. `http://127.0.0.1:4200/api`.
        dedupe_window_seconds: one event per (fingerprint, status, startsAt) inside this window;
            0 disables.
        prefect_api_key: Prefect Cloud API key (sent as a bearer token), if any.
        prefect_auth_string: `user:password` for a self-hosted server with basic auth, if any.
    """

    token: str = field(repr=False)
    prefect_api_url: str
    dedupe_window_seconds: float = DEFAULT_DEDUPE_WINDOW_SECONDS
    path: str = DEFAULT_PATH
    max_body_bytes: int = MAX_BODY_BYTES
    delivery_timeout_seconds: float = 5.0
    delivery_attempts: int = 3
    prefect_api_key: str | None = field(default=None, repr=False)
    prefect_auth_string: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ConfigurationError(
                "relay token must be at least 16 characters; set VIBEOPS_RELAY_TOKEN or "
                "--token-file to a long random value (e.g. `openssl rand -hex 32`)"
            )
        if not self.prefect_api_url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"prefect_api_url must be an http(s) URL ending in /api, got "
                f"{self.prefect_api_url!r}; e.g. http://127.0.0.1:4200/api"
            )
        if self.dedupe_window_seconds < 0:
            raise ConfigurationError("dedupe_window_seconds must be >= 0 (0 disables dedupe)")
        if self.delivery_attempts < 1:
            raise ConfigurationError("delivery_attempts must be >= 1")
        self.prefect_api_url = self.prefect_api_url.rstrip("/")

    def prefect_headers(self) -> dict[str, str]:
        """Authorization headers for the Prefect API (none for an open local server)."""
        if self.prefect_api_key:
            return {"Authorization": f"Bearer {self.prefect_api_key}"}
        if self.prefect_auth_string:
            encoded = base64.b64encode(self.prefect_auth_string.encode()).decode()
            return {"Authorization": f"Basic {encoded}"}
        return {}


class EventSink(Protocol):
    """Where events go (the Prefect API in production)."""

    async def send(self, events: list[dict[str, Any]]) -> None: ...

    async def ready(self) -> bool: ...

    async def aclose(self) -> None: ...


class PrefectEventSink:
    """Posts events to `POST <api>/events`, retrying transient failures with backoff and jitter."""

    def __init__(self, settings: RelaySettings) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            base_url=settings.prefect_api_url,
            headers=settings.prefect_headers(),
            timeout=settings.delivery_timeout_seconds,
        )

    async def send(self, events: list[dict[str, Any]]) -> None:
        """Deliver one batch.

        Raises:
            EventDeliveryError: after the last attempt, or at once on a non-transient answer.
        """
        last = ""
        for attempt in range(1, self.settings.delivery_attempts + 1):
            try:
                response = await self._client.post("/events", json=events)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                if response.status_code not in TRANSIENT_STATUS:
                    raise EventDeliveryError(
                        f"Prefect API refused the events ({last}); check prefect_api_url and "
                        "the API key"
                    )
            if attempt < self.settings.delivery_attempts:
                delay = min(2.0, 0.2 * 2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 (jitter)
        raise EventDeliveryError(
            f"Prefect API at {self.settings.prefect_api_url} unreachable after "
            f"{self.settings.delivery_attempts} attempts ({last})"
        )

    async def ready(self) -> bool:
        try:
            response = await self._client.get("/health", timeout=2.0)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._client.aclose()


class RelayMetrics:
    """The relay's Prometheus counters, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "vibeops_relay_alerts_received",
            "Alerts received in valid webhook payloads.",
            ["status"],
            registry=self.registry,
        )
        self.emitted = Counter(
            "vibeops_relay_events_emitted",
            "Prefect events delivered to the Prefect API.",
            ["event"],
            registry=self.registry,
        )
        self.deduplicated = Counter(
            "vibeops_relay_alerts_deduplicated",
            "Alerts dropped as repeats of the same fingerprint, status and start within the window.",
            registry=self.registry,
        )
        self.rejected = Counter(
            "vibeops_relay_requests_rejected",
            "Webhook requests refused (unauthorized, malformed, too large).",
            ["reason"],
            registry=self.registry,
        )
        self.delivery_failures = Counter(
            "vibeops_relay_delivery_failures",
            "Batches that could not be delivered to the Prefect API (answered 503).",
            registry=self.registry,
        )
        self.delivery_seconds = Histogram(
            "vibeops_relay_delivery_seconds",
            "Time to post one batch of events to the Prefect API.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        for reason in ("unauthorized", "malformed", "too_large"):
            self.rejected.labels(reason=reason)
        for status in ("firing", "resolved"):
            self.received.labels(status=status)
            self.emitted.labels(event=f"vibeops.alert.{status}")


def _error(status_code: int, reason: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status_code, headers=headers or None)


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(settings: RelaySettings, sink: EventSink | None = None) -> Starlette:
    """Build the relay's ASGI app.

    Args:
        settings: token, Prefect API and dedupe window.
        sink: where events go; defaults to the Prefect API named in `settings`.
    """
    metrics = RelayMetrics()
    dedupe = Deduplicator(settings.dedupe_window_seconds)
    state: dict[str, EventSink] = {}

    async def receive_alerts(request: Request) -> Response:
        if not _authorized(request, settings.token):
            metrics.rejected.labels(reason="unauthorized").inc()
            logger.warning(
                "refused a webhook from %s: missing or wrong bearer token", _peer(request)
            )
            return _error(401, "missing or invalid bearer token", **{"WWW-Authenticate": "Bearer"})
        body = await _read_body(request, settings.max_body_bytes)
        if body is None:
            metrics.rejected.labels(reason="too_large").inc()
            return _error(413, f"body larger than {settings.max_body_bytes} bytes")
        try:
            payload = parse_webhook(body)
        except AlertPayloadInvalid as exc:
            metrics.rejected.labels(reason="malformed").inc()
            logger.warning("refused a webhook from %s: %s", _peer(request), exc)
            return _error(400, str(exc))

        now = datetime.now(UTC)
        clock = time.monotonic()
        events, admitted, duplicates = [], [], 0
        for alert in payload.alerts:
            metrics.received.labels(status=alert.status).inc()
            if dedupe.admit(alert.dedupe_key, clock):
                events.append(alert_to_event(alert, payload, now, settings.dedupe_window_seconds))
                admitted.append(alert)
            else:
                duplicates += 1
        metrics.deduplicated.inc(duplicates)
        if events:
            started = time.perf_counter()
            try:
                await state["sink"].send(events)
            except EventDeliveryError as exc:
                for alert in admitted:
                    dedupe.release(alert.dedupe_key, clock)
                metrics.delivery_failures.inc()
                logger.error("could not deliver %d event(s): %s", len(events), exc)
                return _error(503, str(exc), **{"Retry-After": "5"})
            metrics.delivery_seconds.observe(time.perf_counter() - started)
        for event, alert in zip(events, admitted, strict=True):
            metrics.emitted.labels(event=event["event"]).inc()
            logger.info(
                "%s %s fingerprint=%s event_id=%s",
                event["event"],
                alert.alertname,
                alert.fingerprint,
                event["id"],
            )
        return JSONResponse(
            {
                "received": len(payload.alerts),
                "emitted": len(events),
                "deduplicated": duplicates,
                "event_ids": [event["id"] for event in events],
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        if await state["sink"].ready():
            return JSONResponse({"status": "ready"})
        return _error(503, f"Prefect API at {settings.prefect_api_url} is not answering")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["sink"] = sink or PrefectEventSink(settings)
        logger.info(
            "relay ready: %s -> %s/events (dedupe window %ss)",
            settings.path,
            settings.prefect_api_url,
            settings.dedupe_window_seconds,
        )
        try:
            yield
        finally:
            await state["sink"].aclose()

    app = Starlette(
        routes=[
            Route(settings.path, receive_alerts, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.dedupe = dedupe
    return app


def _peer(request: Request) -> str:
    return request.client.host if request.client else "?"


def serve(
    host: str,
    port: int,
    token: str,
    prefect_api_url: str,
    dedupe_window: float = DEFAULT_DEDUPE_WINDOW_SECONDS,
    *,
    prefect_api_key: str | None = None,
    prefect_auth_string: str | None = None,
    log_level: str = "info",
) -> None:
    """Run the relay in the foreground until interrupted (what `vibeops relay` calls).

    Raises:
        ConfigurationError: the token is too short or the Prefect API URL is not an http(s) URL.
    """
    settings = RelaySettings(
        token=token,
        prefect_api_url=prefect_api_url,
        dedupe_window_seconds=dedupe_window,
        prefect_api_key=prefect_api_key,
        prefect_auth_string=prefect_auth_string,
    )
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(message)s")
    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False)


TOKEN_ENV = "VIBEOPS_RELAY_TOKEN"  # noqa: S105 (the variable name, not a value)


def read_token(token_file: Path | None) -> str:
    """The bearer token from `token_file`, else from $VIBEOPS_RELAY_TOKEN (never from argv).

    Raises:
        ConfigurationError: neither is set, or the file is unreadable.
    """
    if token_file is not None:
        try:
            return token_file.read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"--token-file {token_file}: cannot read it ({exc})") from None
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise ConfigurationError(
            f"no relay token: set {TOKEN_ENV} or pass --token-file (a file holding the token "
            "Alertmanager sends in http_config.authorization)"
        )
    return token


def run_relay(
    host: str,
    port: int,
    token_file: Path | None,
    prefect_api_url: str | None,
    dedupe_window: float = DEFAULT_DEDUPE_WINDOW_SECONDS,
) -> None:
    """`vibeops relay`: resolve the token and the Prefect API from the environment, then serve.

    The Prefect API URL defaults to the active profile's PREFECT_API_URL; PREFECT_API_KEY or
    PREFECT_API_AUTH_STRING, when set, authenticate the relay to it.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    api_url = prefect_api_url or (settings.api.url or "")
    if not api_url:
        raise ConfigurationError(
            "no Prefect API URL: pass --prefect-api-url or set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api)"
        )
    api_key = settings.api.key.get_secret_value() if settings.api.key else None
    auth_string = settings.api.auth_string.get_secret_value() if settings.api.auth_string else None
    serve(
        host,
        port,
        read_token(token_file),
        api_url,
        dedupe_window,
        prefect_api_key=api_key,
        prefect_auth_string=auth_string,
    )


class RelayThread:
    """The relay on a uvicorn server in a background thread (tests and benchmarks).

    Example:
        ```python
        relay = RelayThread(create_app(settings), port=free_port()).start()
        ...
        relay.stop()
        ```
    """

    def __init__(self, app: Starlette, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.port = port
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )
        self._thread = threading.Thread(target=self._server.run, name="vibeops-relay", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_seconds: float = 15) -> RelayThread:
        """Start serving; returns self once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ConfigurationError(f"relay did not start on {self.host}:{self.port}")
            time.sleep(0.02)
        return self

    def stop(self, timeout_seconds: float = 10) -> None:
        """Ask uvicorn to exit and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=timeout_seconds)

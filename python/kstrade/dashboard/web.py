"""The dashboard's web app (FastAPI on uvicorn, the `dashboard` extra): the JSON API under /api,
documented at /api/openapi.json; server-sent events at /api/events, one `update` event naming
the sections that changed whenever new records were read (at most four a second); the page at /
with its vendored chart library (nothing from a CDN); a page per finished run directory at
/runs/{name} (`kstrade.dashboard.runs`); and the operator's controls, behind a bearer token that
only the environment or a secret file gives.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import orjson
import uvicorn
from fastapi import FastAPI, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kstrade._native import __version__
from kstrade.bus import Bus, BusError
from kstrade.config import Settings
from kstrade.execution.control import make_command, publish
from kstrade.schemas.models import ControlAction

from . import api
from .follower import TopicFollower, new_group
from .runs import RunDirectories, RunNotFound
from .view import DashboardView

log = logging.getLogger(__name__)

#: Where the operator's token comes from: the variable itself, or a file it names (a secret file).
TOKEN_ENV = "KSTRADE_DASHBOARD_TOKEN"
TOKEN_FILE_ENV = "KSTRADE_DASHBOARD_TOKEN_FILE"
#: A shorter token is refused at start: it could be guessed.
MIN_TOKEN_LENGTH = 16
STATIC = Path(__file__).parent / "static"
#: The page may load only what the dashboard serves: no CDN, no other origin.
_CSP = b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
_SECURITY_HEADERS = [
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_LIMITS = {"candles": 5000, "signals": 1000, "orders": 1000, "accuracy": 5000}
#: Where `python -m kstrade run` writes its run directories by default.
RUNS = Path("runs")
#: The operator's token as the OpenAPI document describes it (checked by the control routes).
_BEARER = HTTPBearer(auto_error=False, description=f"The operator token (${TOKEN_ENV})")


class TokenError(ValueError):
    """The operator token is configured wrongly (unreadable file, too short, set twice)."""


def operator_token(environ: Mapping[str, str] = os.environ) -> str | None:
    """The operator's bearer token from $KSTRADE_DASHBOARD_TOKEN or the file that
    $KSTRADE_DASHBOARD_TOKEN_FILE names; None when neither is set (controls disabled). Never
    from a config file: secrets come from the environment or secret files only."""
    value, path = environ.get(TOKEN_ENV), environ.get(TOKEN_FILE_ENV)
    if value and path:
        raise TokenError(f"set {TOKEN_ENV} or {TOKEN_FILE_ENV}, not both")
    if path:
        try:
            value = Path(path).expanduser().read_text()
        except OSError as exc:
            raise TokenError(f"{TOKEN_FILE_ENV}: cannot read {path}: {exc.strerror or exc}") from exc
    if not value:
        return None
    token = value.strip()
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        where = TOKEN_FILE_ENV if path else TOKEN_ENV
        raise TokenError(f"{where}: the operator token needs at least {MIN_TOKEN_LENGTH} characters and no spaces")
    return token


def _json(content: Any) -> bytes:
    if isinstance(content, BaseModel):
        content = content.model_dump(mode="json")
    return orjson.dumps(content)


class _Json(JSONResponse):
    """orjson: the candle and signal pages are the bulk of the traffic."""

    def render(self, content: Any) -> bytes:
        return _json(content)


class _SecurityHeaders:
    """Pure ASGI (the event stream passes through untouched): the headers every answer carries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *_SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class _Changes:
    """The event loop's side of the view's listener: an event set (and replaced) on each change."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self) -> None:
        event, self.event = self.event, asyncio.Event()
        event.set()


def _problem(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return _Json(api.Problem(error=message), status_code=status, headers=dict(headers or {}))


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    kinds = {"query": "query parameter ", "path": "path parameter ", "body": "body.", "header": "header "}
    parts = [str(p) for p in loc]
    if parts and parts[0] in kinds:
        return kinds[parts[0]] + ".".join(parts[1:]) if len(parts) > 1 else parts[0]
    return ".".join(parts) or "request"


def _validation_message(errors: Any) -> str:
    return "; ".join(f"{_where(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors)


def create_app(
    bus: Bus,
    settings: Settings,
    *,
    token: str | None = None,
    view: DashboardView | None = None,
    follow: bool = True,
    group: str | None = None,
    throttle_s: float = 0.25,
    runs: Path = RUNS,
) -> FastAPI:
    """The dashboard on `bus`. With `follow` (the default) a `TopicFollower` reads the topics into
    the view while the app runs (started and stopped by the app's lifespan). `token` enables the
    operator controls (`operator_token()` reads it from the environment). `runs`: the directory
    whose run directories the run pages show."""
    view = view if view is not None else DashboardView(settings, group=group or new_group())
    run_directories = RunDirectories(runs, settings.execution.guardrails)
    follower = TopicFollower(bus, view, group=group or view.group) if follow else None
    changes = _Changes()
    controls_reason = "" if token else (
        f"operator controls are disabled: no token is configured (set {TOKEN_ENV} or {TOKEN_FILE_ENV} where "
        "the dashboard runs)"
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def changed(_version: int) -> None:  # from the reading thread: hand over to the loop
            loop.call_soon_threadsafe(changes.notify)

        stop_listening = view.listen(changed)
        if follower is not None:
            follower.start()
        try:
            yield
        finally:
            stop_listening()
            if follower is not None:
                await run_in_threadpool(follower.stop)

    app = FastAPI(
        title="kstrade dashboard",
        version=__version__,
        description="The trading pipeline as the dashboard reads it from the bus (its own consumer group, no "
        "commits). Times are UTC; money is in the account currency.",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN: the page works offline
        redoc_url=None,
        lifespan=lifespan,
        default_response_class=_Json,
        responses={400: {"model": api.Problem}},
    )
    app.state.view, app.state.follower, app.state.bus = view, follower, bus
    app.add_middleware(_SecurityHeaders)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return _problem(400, _validation_message(exc.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such page: {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _problem(exc.status_code, message, exc.headers)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.exception("dashboard: %s %s failed", request.method, request.url.path)
        return _problem(500, f"internal error ({type(exc).__name__}); the dashboard's log has the details")

    def known(symbol: str) -> str:
        symbols = view.symbols()
        if symbol not in symbols:
            raise HTTPException(404, f"unknown symbol {symbol!r}: use one of {', '.join(symbols)}")
        return symbol

    not_found: dict[int | str, dict[str, Any]] = {404: {"model": api.Problem, "description": "Unknown symbol"}}

    @app.get("/api/meta", tags=["dashboard"])
    def meta() -> api.Meta:
        """The symbols, the account, the bus and whether the operator controls are enabled."""
        return api.Meta(symbols=view.symbols(), account=settings.execution.account,
                        currency=settings.execution.guardrails.currency, transport=bus.transport, group=view.group,
                        controls=token is not None, controls_reason=controls_reason, version=__version__)  # fmt: skip

    @app.get("/api/account", tags=["trading"])
    def account() -> api.Account:
        """Balance after each closed trade (trades.pnl), drawdown, today's realised P&L (Prague day)
        and the FTMO daily-loss and maximum-loss floors with the headroom above them."""
        return view.account()

    @app.get("/api/positions", tags=["trading"])
    def positions() -> api.Positions:
        """Open positions: filled executions without a closing trades.pnl event."""
        return view.positions()

    @app.get("/api/orders", tags=["trading"])
    def orders(limit: Annotated[int, Query(ge=1, le=_LIMITS["orders"])] = 100) -> api.Orders:
        """The latest orders (one per signal) with the most final status seen."""
        return view.orders_page(limit)

    @app.get("/api/signals", tags=["trading"], responses=not_found)
    def signals(
        symbol: Annotated[str | None, Query(max_length=64, description="Only this symbol (empty: all)")] = None,
        limit: Annotated[int, Query(ge=1, le=_LIMITS["signals"])] = 100,
    ) -> api.Signals:
        """Recent final signals and recent rejections (signals.filtered, with their reject_reason)."""
        return view.signals_page(known(symbol) if symbol else None, limit)

    @app.get("/api/candles", tags=["market"], responses=not_found)
    def candles(
        symbol: Annotated[str, Query(max_length=64)],
        limit: Annotated[int, Query(ge=1, le=_LIMITS["candles"])] = 500,
    ) -> api.Candles:
        """The latest closed 1m candles of a symbol (market.candles.{symbol}.1m)."""
        return view.candles_page(known(symbol), limit)

    @app.get("/api/pipeline", tags=["pipeline"])
    def pipeline() -> api.Pipeline:
        """Messages per topic, dead letters per dlq.* topic, the latest metrics.latency records, alerts."""
        return view.pipeline()

    @app.get("/api/models", tags=["models"])
    def models() -> api.Models:
        """Tier calibration (stated confidence against the realised hit rate, per tier); each
        model's latest rolling accuracy against the naive baselines and its error-drift test;
        feature drift (PSI per symbol and feature, the top movers); the model versions named
        (metrics.model.drift, as the metrics collector publishes it)."""
        return view.models()

    @app.get("/api/models/accuracy", tags=["models"], responses=not_found)
    def model_accuracy(
        symbol: Annotated[str, Query(max_length=64)],
        limit: Annotated[int, Query(ge=1, le=_LIMITS["accuracy"])] = 500,
    ) -> api.AccuracyHistory:
        """Each model's rolling directional accuracy on a symbol over time, and the naive
        baselines' (last-direction, always-flat) over the same minutes, from the 1m candles."""
        return view.accuracy_history(known(symbol), limit)

    run_not_found: dict[int | str, dict[str, Any]] = {404: {"model": api.Problem, "description": "No such run"}}

    @app.get("/api/runs", tags=["runs"])
    def runs_listing() -> api.Runs:
        """The finished run directories (with a summary.json) under the dashboard's runs directory."""
        return run_directories.listing()

    @app.get("/api/runs/{name}", tags=["runs"], responses=run_not_found)
    def run_detail(name: str) -> api.RunDetail:
        """One run directory: summary.json, the equity curve and drawdown, daily returns, the FTMO
        headroom after each close, every trade (what report.html shows, as data)."""
        try:
            return run_directories.detail(name)
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/api/control", tags=["control"])
    def control() -> api.Control:
        """Whether the controls are enabled, and the commands seen with their acknowledgements."""
        return view.control(token is not None, controls_reason)

    body_schema = api.ControlRequest.model_json_schema()
    control_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": api.Problem, "description": "Bad body"},
        401: {"model": api.Problem, "description": "No token, or a wrong one: nothing was sent"},
        403: {"model": api.Problem, "description": "Controls disabled: no token configured"},
        503: {"model": api.Problem, "description": "The bus did not take the command"},
    }

    def control_route(action: ControlAction) -> Callable[..., Awaitable[Response]]:
        async def send(
            request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)]
        ) -> Response:
            # The token first: without it nothing else of the request is even read.
            if token is None:
                return _problem(403, controls_reason)
            presented = credentials.credentials if credentials is not None else ""
            if not hmac.compare_digest(presented.encode(), token.encode()):
                return _problem(401, "a valid operator token is needed: Authorization: Bearer <token>",
                                {"WWW-Authenticate": "Bearer"})  # fmt: skip
            raw = await request.body()
            try:
                body = api.ControlRequest.model_validate_json(raw or b"{}")
            except ValidationError as exc:
                return _problem(400, _validation_message(
                    [{**e, "loc": ("body", *e["loc"])} if e["type"] != "json_invalid" else
                     {"loc": ("body",), "msg": f"not valid JSON ({e['msg']})"} for e in exc.errors()]
                ))  # fmt: skip
            if action is ControlAction.FLATTEN and not body.confirm:
                return _problem(400, 'body.confirm: flatten closes every open position at market, then halts: '
                                     'send "confirm": true')  # fmt: skip
            client = request.client.host if request.client is not None else "unknown"
            command = make_command(
                action,
                account=settings.execution.account,
                issued_by=f"dashboard:{client}@{socket.gethostname()}",
                reason=body.reason,
            )
            try:
                await run_in_threadpool(publish, bus, command, stage="dashboard", timeout=10.0)
            except BusError as exc:
                return _problem(503, f"{action.value.lower()} not sent: {exc}")
            log.warning("dashboard: %s for account %s sent by %s (command %s)", action.value, command.account,
                        command.issued_by, command.command_id)  # fmt: skip
            sent = api.ControlSent(
                command_id=str(command.command_id), action=action.value, account=command.account,
                issued_by=command.issued_by, reason=command.reason,
                note="sent to control.execution; the execution stage acknowledges it on metrics.alerts "
                "(GET /api/control shows when)",
            )  # fmt: skip
            return _Json(sent, status_code=202)

        send.__name__ = f"control_{action.value.lower()}"
        send.__doc__ = {
            ControlAction.HALT: "No new orders until a resume (open positions keep their stops and targets).",
            ControlAction.RESUME: "Lift an operator's halt (a loss limit's halt stands).",
            ControlAction.FLATTEN: 'Close every open position at market, then halt. Needs "confirm": true.',
        }[action]
        return send

    for action in ControlAction:
        app.add_api_route(
            f"/api/control/{action.value.lower()}", control_route(action), methods=["POST"], tags=["control"],
            status_code=202, response_model=api.ControlSent, responses=control_responses,
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}},
        )  # fmt: skip

    @app.get("/api/events", tags=["dashboard"], response_class=StreamingResponse)
    async def events() -> StreamingResponse:
        """Server-sent events: `update` with {"version", "sections"} whenever records changed
        what a section shows (at most one every 250 ms), and a comment every 15 s while idle."""

        async def stream() -> AsyncIterator[str]:
            seen: dict[str, int] = {}
            yield "retry: 2000\n\n"
            while True:
                event = changes.event  # taken before looking: a change after the look sets it
                sections = view.changed_since(seen)
                if sections:
                    yield f"event: update\ndata: {json.dumps({'version': view.version, 'sections': sections})}\n\n"
                    await asyncio.sleep(throttle_s)
                    continue
                try:
                    await asyncio.wait_for(event.wait(), 15.0)
                except TimeoutError:
                    yield ": idle\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})  # fmt: skip

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/runs", include_in_schema=False)
    @app.get("/runs/", include_in_schema=False)
    @app.get("/runs/{name}", include_in_schema=False)
    def run_page() -> FileResponse:
        return FileResponse(STATIC / "runs.html", media_type="text/html", headers={"Cache-Control": "no-cache"})

    @app.get("/runs/{name}/report.html", include_in_schema=False)
    def run_report(name: str) -> FileResponse:
        try:
            return FileResponse(run_directories.report(name), media_type="text/html")
        except RunNotFound as exc:
            raise HTTPException(404, str(exc)) from exc

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


class DashboardServer:
    """The app on uvicorn in a thread of this process (tests; `run --dashboard`)."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = app
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                timeout_graceful_shutdown=1, lifespan="on")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.host = host
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> DashboardServer:
        self._thread = threading.Thread(target=self.server.run, name="kstrade-dashboard-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard's web server did not start")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        sockets = [s for server in self.server.servers for s in server.sockets]
        return int(sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 15.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)


def serve_in_background(
    bus: Bus,
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    runs: Path = RUNS,
) -> DashboardServer:
    """Serve the dashboard on `bus` from a thread of this process; `stop()` it when done."""
    return DashboardServer(create_app(bus, settings, token=token, runs=runs), host, port).start()


def serve_command(
    *,
    config: str | None,
    bus: str | None,
    bootstrap: str | None,
    host: str,
    port: int,
    runs: str | None = None,
    run: str | None = None,
) -> int:
    """`python -m kstrade dashboard`: serve until interrupted. Returns the exit status. `runs`:
    the directory of run directories the run pages list (default ./runs); `run`: one run
    directory, whose page is announced (its parent is then the runs directory)."""
    from kstrade.bus.reach import ClusterUnreachable, check_reachable
    from kstrade.config import ConfigError, discover, load

    root, page = Path(runs) if runs else RUNS, ""
    if run:
        chosen = Path(run).resolve()
        if runs or not (chosen / "summary.json").is_file():
            why = "give --run or --runs, not both" if runs else f"{run} is not a run directory (no summary.json)"
            print(f"error: {why}", file=sys.stderr)
            return 2
        root, page = chosen.parent, f"runs/{chosen.name}"
    try:
        settings = load(discover(config), bus={"transport": bus, "bootstrap": bootstrap})
        token = operator_token()
        the_bus = Bus.from_settings(settings.bus)
        check_reachable(the_bus, settings.bus.protocol)
    except (ConfigError, TokenError, ClusterUnreachable, BusError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    app = create_app(the_bus, settings, token=token, runs=root)
    where = f"Kafka at {the_bus.bootstrap}" if the_bus.transport == "kafka" else "the memory bus"
    print(f"kstrade dashboard: http://{host}:{port}/ reading {where} in group {app.state.view.group} "
          "(from the start of each topic; it never commits)")  # fmt: skip
    print(f"run pages: http://{host}:{port}/{page or 'runs/'} (the run directories in {root})")
    if the_bus.transport == "memory":
        print("note: this process's memory bus is empty; the pipeline's own bus is in its process "
              "(python -m kstrade run) or on Kafka (--bus kafka --bootstrap HOST:PORT)")  # fmt: skip
    print("operator controls: enabled (bearer token)" if token else f"operator controls: disabled ({TOKEN_ENV} unset)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: whoever reaches it sees the account", file=sys.stderr)
    # uvicorn handles Ctrl-C and SIGTERM, and says so itself when the port is taken (exit 1).
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                  timeout_graceful_shutdown=1)).run()  # fmt: skip
    return 0

"""The app factory: `create_app(settings)` builds one FastAPI app over one ledger.

Nothing is built at import. `episteme serve` calls the factory once per worker
process (uvicorn's ``factory=True``); tests build their own apps. The MCP server is
mounted at ``/mcp`` behind the same bearer tokens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from starlette.responses import Response

from episteme import __version__, web
from episteme.diagnose.config import DiagnosisConfig
from episteme.diagnose.engine import DiagnosisEngine, lease_from_env
from episteme.diagnose.narrator import from_env as narrator_from_env
from episteme.errors import EpistemeError, database_failed, from_database
from episteme.ledger.background import Leader
from episteme.ledger.core import Ledger
from episteme.ledger.gardener import Gardener, GardenerLoop, worker_name
from episteme.ledger.trust import TrustPolicy
from episteme.ledger.webhooks import Deliverer
from episteme.timeutil import Clock

from . import admin_routes, diagnosis_routes, fastpath, learning_routes, ledger_routes, problems
from .deps import BodyLimit, HeadAsGet, OneCredential, scraper
from .metrics import Metrics, TimingMiddleware
from .schemas import Health
from .settings import Settings

WRITE_FAILURE_SHOWN_S = 60.0
"""How long `/health` reports a failed write (degraded, 503) unless a write commits: a
server no write reaches (taken out of a balancer's rotation) is not held out for ever."""

DESCRIPTION = """\
The Episteme ledger over HTTP: what agents believed, why, who told them, and how to fix it.

Every route but `/health` needs `Authorization: Bearer <token>`; who is acting is the
token's principal, never a field of the request. Errors are `application/problem+json`.
Times are RFC 3339 (answers use UTC). See docs/api.md for roles and examples.
"""


def create_app(
    settings: Settings | None = None,
    *,
    ledger: Ledger | None = None,
    clock: Clock | None = None,
    diagnosis: DiagnosisEngine | None = None,
) -> FastAPI:
    """An app over `ledger` (or the ledger in `settings.home`, opened now)."""
    settings = settings or Settings.from_env()
    owned = ledger is None
    led = ledger or Ledger.open(settings.location, clock=clock, policy=TrustPolicy.from_env())
    engine = diagnosis or DiagnosisEngine(
        led, lease_from_env, config=DiagnosisConfig.load(), narrator=narrator_from_env()
    )
    metrics = Metrics(led)
    mcp_mount = None
    if settings.mcp:
        from episteme.mcp import mount

        mcp_mount = mount(led, metrics, host=settings.host)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if owned:  # closed last: everything started below stops before it closes
                stack.callback(led.close)
            if mcp_mount is not None:
                await stack.enter_async_context(mcp_mount.run())
            stack.push_async_callback(engine.close)
            stack.callback(_on_stop(engine.stop_following))
            if settings.background:
                # background work runs in the one process that leads it: the gardener
                # and the webhook deliveries start when this process leads, stop when not
                deliverer = Deliverer(led.store, led.webhooks, led.clock, worker=worker_name())
                loop = GardenerLoop(Gardener(led), deliver=deliverer.run_once)
                loop.error_listeners.append(metrics.background_failed)
                deliverer.outcome_listeners.append(metrics.delivered)
                app.state.gardener = loop

                def lead(leading: bool) -> None:
                    if leading:
                        loop.start()
                    else:
                        loop.stop()

                leader = Leader(led.store.leadership("background"), on_change=lead)
                app.state.leader = leader.start()
                stack.callback(deliverer.close)
                stack.callback(deliverer.hand_back)  # what loop.stop could not wait for
                stack.callback(loop.stop)
                stack.callback(leader.stop)
            yield

    app = FastAPI(
        title="Episteme",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        redirect_slashes=False,  # `/v1/assertions/` is a 404 problem, not a redirect
        responses=problems.responses(400, 413, 415, 422),
    )
    app.state.ledger = led
    app.state.metrics = metrics
    app.state.settings = settings
    app.state.diagnosis = engine
    problems.install(app)
    routers = [
        ledger_routes.router,
        learning_routes.router,
        admin_routes.router,
        diagnosis_routes.build(""),
        diagnosis_routes.build("/v1/diagnosis"),
        web.router,
    ]
    for router in routers:
        app.include_router(router)
    app.mount(web.STATIC_PATH, web.static_files(), name="static")
    if mcp_mount is not None:
        app.router.routes.append(mcp_mount.route)

    @app.get(
        "/health",
        response_model=Health,
        tags=["service"],
        summary="Liveness, no token",
        responses={
            503: {
                "model": Health,
                "description": "Degraded: the store does not answer, or writes fail",
            }
        },
    )
    def health() -> Response:
        try:
            # within 2 s, whatever the store does (away, or its journal locked)
            # (the gardener made inside: making it reads, and the probe checks first)
            status = led.store.probe_reading(lambda reader: Gardener(led).status(reader))
            events = status.head
            workers = led.store.workers()
            leader: Leader | None = getattr(app.state, "leader", None)
            if leader is not None:
                workers["background"] = leader.state()
                workers["gardener"] = (
                    f"cursor {status.cursor}, {status.lag_events} events behind"
                    f" ({status.lag_seconds:.1f} s)"
                )
                loop: GardenerLoop | None = getattr(app.state, "gardener", None)
                if loop is not None and loop.running and loop.last_error:
                    workers["gardener_errors"] = f"{loop.errors}, last: {loop.last_error}"
            failed = led.store.write_failure
            if failed is not None and time.monotonic() - failed[0] < WRITE_FAILURE_SHOWN_S:
                # a full disk: the store answers reads, but no write (audited reads too)
                body = Health(
                    status="degraded",
                    store=f"writes failing: {failed[1]}",
                    journal_events=events,
                    workers=workers,
                )
            else:
                body = Health(status="ok", store="ok", journal_events=events, workers=workers)
        except Exception as exc:  # health must answer, whatever the store does
            if from_database(exc):  # a privilege revoked: its words, as the API says them
                exc = database_failed(exc)
            why = exc.message if isinstance(exc, EpistemeError) else type(exc).__name__
            store = f"unavailable: {why}"  # the store's messages never hold a secret
            # no count: 0 would claim an empty journal
            body = Health(status="degraded", store=store, journal_events=None, workers={})
        code = 200 if body.status == "ok" else 503
        return Response(body.model_dump_json(), code, media_type="application/json")

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (any valid token)",
        responses={
            200: {"content": {"text/plain": {}}, "description": "exposition format"},
            **problems.responses(401, 403),
        },
    )
    def scrape(who: Annotated[None, Depends(scraper())]) -> Response:
        body, content_type = metrics.expose()
        return Response(body, media_type=content_type)

    app.add_middleware(problems.LastResort)  # the first added: it wraps the routes alone
    app.add_middleware(BodyLimit, limit=settings.max_body)
    if settings.fast_query:
        [route] = [
            r for r in ledger_routes.router.routes if getattr(r, "path", "") == fastpath.PATH
        ]
        app.add_middleware(
            fastpath.QueryFastPath,
            ledger=led,
            metrics=metrics,
            limit=settings.max_body,
            route=route,
        )
    app.add_middleware(HeadAsGet)
    app.add_middleware(OneCredential)  # before any door reads the token
    # outermost, so that it sees HEAD; the routes, to name those the router never saw
    every = [r for r in app.router.routes if getattr(r, "path", None)]
    every += [r for router in routers for r in router.routes]
    app.add_middleware(TimingMiddleware, metrics=metrics, routes=every)
    return app


def factory() -> FastAPI:
    """Entry point for uvicorn workers: settings from `EPISTEME_*` variables."""
    _leave_with_parent()
    return create_app(Settings.from_env())


PARENT_POLL_S = 1.0


def _leave_with_parent() -> None:
    """Stop this worker when the process that started it is gone. Killed with SIGKILL,
    `episteme serve` cannot stop its workers, which would go on answering on its port
    (and keep the next start from binding it) with no one to restart or stop them."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn's own graceful stop

    threading.Thread(target=watch, name="episteme-parent-watch", daemon=True).start()


def _on_stop(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` first when the server is told to stop (SIGINT, SIGTERM), then the
    server's own handler; returns what puts that handler back. The server's graceful
    stop waits for open requests before the app hears of it, so what would hold it (a
    followed stream) must hear of the signal itself. Nothing is done off the main
    thread, where no signal arrives, or where no handler of the server's is set."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    before: dict[signal.Signals, Callable[[int, FrameType | None], Any]] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(sig)
        if not callable(handler):
            continue

        def chained(
            signum: int, frame: FrameType | None, then: Callable[..., Any] = handler
        ) -> None:
            callback()
            then(signum, frame)

        before[sig] = handler
        signal.signal(sig, chained)

    def restore() -> None:
        for sig, handler in before.items():
            signal.signal(sig, handler)

    return restore

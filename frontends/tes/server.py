"""The TES 1.1 HTTP API over :class:`~frontends.tes.service.TaskService`, under ``/ga4gh/tes/v1``.

Security (docs/tes.md): loopback by default, and another address only with a bearer token file; the token
is compared in constant time; request bodies are limited (TES's 128 KiB ``content`` fits easily); every
refusal is one line (400 bad task, 401 token, 404 unknown task, 413 too large). No credential is ever in a
task view: tasks hold URLs, and storage credentials stay in the server's environment and profiles.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from frontends.tes.models import TesTask
from frontends.tes.service import TaskService, UnknownTask
from gpstage import __version__
from gpstage.errors import BadInput, GpstageError

BASE = "/ga4gh/tes/v1"
VIEWS = ("MINIMAL", "BASIC", "FULL")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"msg": message, "status_code": status}, status_code=status)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(service: TaskService, token: str | None = None) -> FastAPI:
    app = FastAPI(title="gpstage TES", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    limit = service.settings.max_request_bytes

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error(401, "missing or wrong bearer token: send Authorization: Bearer <token>")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return error(413, f"request body over {limit} bytes")
        return await call_next(request)

    @app.exception_handler(BadInput)
    async def bad(_: Request, err: BadInput) -> JSONResponse:
        return error(400, str(err))

    @app.exception_handler(UnknownTask)
    async def missing(_: Request, err: UnknownTask) -> JSONResponse:
        return error(404, f"no task {err.args[0]!r}")

    @app.exception_handler(GpstageError)
    async def failed(_: Request, err: GpstageError) -> JSONResponse:
        return error(500, str(err))

    @app.get(f"{BASE}/service-info")
    def service_info() -> dict[str, Any]:
        return {"id": "org.gpstage.tes", "name": "gpstage TES", "description": "GA4GH TES on gpstage launchers",
                "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
                "organization": {"name": "gpstage", "url": "https://github.com/genepattern"},
                "version": __version__, "storage": service.allow, "tesResources_backend_parameters": []}

    @app.post(f"{BASE}/tasks")
    async def create(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > limit:
            return error(413, f"request body over {limit} bytes")  # type: ignore[return-value]
        try:
            task = TesTask.model_validate_json(body)
        except ValueError as err:
            raise BadInput(f"not a TES task: {str(err).splitlines()[0]}", "send a tesTask document") from None
        return {"id": await asyncio.to_thread(service.create, task)}

    @app.get(f"{BASE}/tasks")
    def list_tasks(name_prefix: str | None = None, state: str | None = None, page_size: int | None = None,
                   page_token: str | None = None, view: str = "MINIMAL") -> dict[str, Any]:
        return service.list(name_prefix=name_prefix, state=state, page_size=page_size, page_token=page_token,
                            view=_view(view))

    @app.get(f"{BASE}/tasks/{{task_id}}")
    def get_task(task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        return service.get(task_id, _view(view))

    @app.post(f"{BASE}/tasks/{{task_id}}:cancel")
    def cancel(task_id: str) -> dict[str, Any]:
        service.cancel(task_id)
        return {}

    return app


def _view(view: str) -> str:
    if view not in VIEWS:
        raise BadInput(f"view {view!r} is not one of {', '.join(VIEWS)}", "use MINIMAL, BASIC or FULL")
    return view


class Refresher(threading.Thread):
    """The service's background pass every ``poll_interval`` seconds, until stopped."""

    def __init__(self, service: TaskService) -> None:
        super().__init__(daemon=True, name="tes-refresh")
        self.service = service
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.service.settings.poll_interval):
            try:
                self.service.refresh()
            except Exception as err:  # noqa: BLE001 - one bad pass must not stop the next
                print(f"gpstage tes: background pass failed: {err}", flush=True)


def serve(host: str, port: int, service: TaskService, token: str | None) -> None:
    """Run the server until interrupted; refuses a non-loopback address without a token."""
    import uvicorn

    if not is_loopback(host) and token is None:
        raise BadInput(f"--host {host} is not a loopback address, and no --token-file was given",
                       "give --token-file, or serve on 127.0.0.1 behind a proxy that authenticates")
    refresher = Refresher(service)
    refresher.start()
    try:
        uvicorn.run(create_app(service, token), host=host, port=port, log_level="warning")
    finally:
        refresher.stopped.set()

"""notiflow's HTTP service, assembled: everything for API clients under /v1 behind a token; short links,
the e-mail open pixel, health and provider webhooks (their own secret) outside it.

Each resource has its module (api/templates.py, api/tasks.py, api/reports.py, …) with its router; this
module only wires them, the error shape (api/errors.py) and the limits (api/limits.py). A new resource
adds its router to V1_ROUTERS.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.utils import get_openapi

from api import checks, errors, messages, public, reports, task_templates, tasks, templates, tokens, webhooks
from api.auth import TrustedHosts, require_token, trusted_hosts
from api.errors import documented
from api.inputs import refuse_control_characters
from api.limits import BodySizeLimit
from models.db import get_engine
from models.params import NotificationTaskParams
from models.settings import get_settings

API_VERSION = "v1"
V1_ROUTERS: list[APIRouter] = [messages.router, templates.router, tasks.router, reports.router, checks.router, task_templates.router, tokens.router]


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    get_engine()  # migrate before the first webhook writes
    yield


DESCRIPTION = """Send notifications, run notification tasks from files, manage templates, senders, reports,
phone checks and API tokens.

Every `/v1` route needs `Authorization: Bearer TOKEN` (create one with `notiflow token create NAME` or
`POST /v1/tokens`). Errors are always `{"error": {"code", "message", "details"}}`. Each token may make
`NOTIFLOW_API_RATE_PER_SECOND` requests a second on average (`NOTIFLOW_API_RATE_BURST` at once) per API
process; past that the answer is 429 with `Retry-After`. Bodies over `NOTIFLOW_API_MAX_JSON_BYTES`
(uploads: `NOTIFLOW_API_MAX_UPLOAD_BYTES`) are answered 413."""

# The schema is served only with a token (below), and no docs page that would fetch it without one.
app = FastAPI(title="notiflow", summary="Multichannel notification campaigns on Prefect", version=API_VERSION,
              description=DESCRIPTION, lifespan=_lifespan, openapi_url=None, docs_url=None, redoc_url=None)
errors.install(app)
_settings = get_settings()
app.add_middleware(BodySizeLimit, upload_bytes=_settings.api_max_upload_bytes, json_bytes=_settings.api_max_json_bytes)
app.add_middleware(TrustedHosts, hosts=trusted_hosts())

# Every /v1 route is on this router: a token (within its rate) first, then plain-text paths and queries.
v1 = APIRouter(prefix=f"/{API_VERSION}", dependencies=[Depends(require_token), Depends(refuse_control_characters)],
               responses=documented(401, 429, 500))


@v1.get("/openapi.json", include_in_schema=False)
def openapi_schema() -> dict[str, Any]:
    return app.openapi()


for router in V1_ROUTERS:
    v1.include_router(router)

app.include_router(public.router)
app.include_router(webhooks.router)
app.include_router(v1)


def _openapi() -> dict[str, Any]:
    """FastAPI's schema, with what it cannot infer: the JSON form of POST /v1/tasks, the server, every /v1
    operation's bearer security."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, summary=app.summary, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    params_schema = NotificationTaskParams.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(params_schema.pop("$defs", {}))
    params_schema["properties"].pop("task_id", None)  # a new task never continues another
    components["NotificationTaskParams"] = params_schema
    # One error shape everywhere: FastAPI's own 422 body is never answered (api/errors.py answers instead).
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    _replace_refs(schema["paths"], "#/components/schemas/HTTPValidationError", "#/components/schemas/ErrorResponse")
    schema["servers"] = [{"url": "/"}]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if path.startswith(f"/{API_VERSION}/"):
                operation["security"] = [{"HTTPBearer": []}]
            else:
                operation["security"] = []
    app.openapi_schema = schema
    return schema


def _replace_refs(node: Any, old: str, new: str) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and value == old:
                node[key] = new
            else:
                _replace_refs(value, old, new)
    elif isinstance(node, list):
        for item in node:
            _replace_refs(item, old, new)


app.openapi = _openapi  # type: ignore[method-assign]

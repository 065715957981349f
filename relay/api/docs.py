"""The OpenAPI document and ``/docs``, served with no outside network.

``/docs`` is FastAPI's Swagger UI page, its script, stylesheet and icon served by this app
from the ``swagger-ui-bundle-v2`` package (Swagger UI 5, which reads OpenAPI 3.1) under
``/docs/assets``: nothing comes from a CDN. The document itself is FastAPI's, plus the
request-body schemas (the routes read their bodies raw and hand them to the producer's
validation, so FastAPI does not see those models on its own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from relay.api.schemas import BatchIn, KeyIn, MessageIn, StreamEvent

ASSETS = "/docs/assets"

DESCRIPTION = """\
relay's HTTP API: queue SMS / WhatsApp / RCS for your Android phones (SMSGateway24), urgent
first, paced per phone, every status written back.

Authenticate with `Authorization: Bearer <key>`; keys come from
`relay apikey create NAME --scope send|read|admin`. Every error answers
`{"error": {"code", "message", "field"?}}`. `503` with `Retry-After` means Redis is away: its
message says whether nothing was stored or the outcome is unknown (then send again with the
same `Idempotency-Key`, which never stores a message twice).
"""


def swagger_assets() -> Path:
    """The folder of the packaged Swagger UI files."""
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


def install(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets from this app, and extend the OpenAPI document."""
    app.mount(ASSETS, StaticFiles(directory=swagger_assets()), name="docs-assets")

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, include_in_schema=False, response_class=HTMLResponse)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=DESCRIPTION,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (MessageIn, BatchIn, KeyIn, StreamEvent):
                body = model.model_json_schema(ref_template="#/components/schemas/{model}")
                for name, sub in body.pop("$defs", {}).items():
                    components.setdefault(name, sub)
                components[model.__name__] = body
            _one_error_shape(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _one_error_shape(schema: dict[str, Any]) -> None:
    """FastAPI documents its own 422 shape for parameter errors; relay answers those in its
    one error shape too, so the document says so."""
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is None:
                continue
            content = answer.get("content", {}).get("application/json", {})
            if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
                content["schema"] = error_ref
                answer["description"] = "Invalid input; nothing stored."
    names = schema.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        names.pop(unused, None)

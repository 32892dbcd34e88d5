"""``GET /openapi.json`` (the OpenAPI 3.1 document) and ``GET /docs`` (Swagger UI, served
from the assets the ``swagger-ui-py`` package ships: nothing comes from a CDN)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from receiver.openapi import build_openapi
from receiver.routes.common import json_response, settings_of

ASSETS = "/docs/assets"

DOCS_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>upscale-relay API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script>
  window.ui = SwaggerUIBundle({{
    url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null
  }});
</script>
</body>
</html>
"""


async def openapi_json(request: Request) -> Response:
    return json_response(build_openapi(settings_of(request)))


async def docs(request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE, headers={"cache-control": "no-cache"})


routes: list[BaseRoute] = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Mount(ASSETS, StaticFiles(packages=[("swagger_ui", "static")]), name="docs-assets"),
]

"""``GET /docs``: Swagger UI served offline from the ``swagger-ui-bundle`` package.

The page and every asset it loads come from this process: the HTML names
only relative ``/docs/static/...`` URLs and the OpenAPI document of this
hub, so the docs work on a machine without internet access and leak no
request to a CDN. ``swagger-ui-bundle`` ships Swagger UI 4.15, which renders
only OpenAPI 3.0, so the page loads the 3.0 rendering of the hub's document
(``/api/v1/openapi-3.0.json``, see :func:`objectos.api.openapi.downgrade_to_30`);
``/api/v1/openapi.json`` stays the 3.1 original.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from objectos.api.openapi import OPENAPI_30_PATH

DOCS_PATH = "/docs"
STATIC_PATH = f"{DOCS_PATH}/static"

#: Only these files of the bundle are served (no source maps, no sample initializer
#: pointing at the petstore on the internet).
ASSETS = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-ui-standalone-preset.js",
        "favicon-32x32.png",
    }
)


def swagger_ui_dir() -> Path:
    """The Swagger UI files inside the installed ``swagger-ui-bundle`` package."""
    import swagger_ui_bundle

    return Path(str(swagger_ui_bundle.swagger_ui_path))


def docs_html(spec_url: str = OPENAPI_30_PATH, title: str = "ObjectOS Hub API") -> str:
    """The Swagger UI page for the document at ``spec_url`` (a path on this server)."""
    title = html.escape(title)
    # JSON-in-JS: escape for a double-quoted JS string inside a <script>.
    spec = spec_url.replace("\\", "\\\\").replace('"', '\\"').replace("<", "\\u003c")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{STATIC_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{STATIC_PATH}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{STATIC_PATH}/swagger-ui-bundle.js"></script>
  <script src="{STATIC_PATH}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{
      url: "{spec}",
      dom_id: "#swagger-ui",
      deepLinking: true,
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
      layout: "StandaloneLayout"
    }});
  </script>
</body>
</html>
"""


class _Assets(StaticFiles):
    """StaticFiles limited to :data:`ASSETS`."""

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        if path not in ASSETS:
            return "", None
        return super().lookup_path(path)


def docs_routes(
    title: str = "ObjectOS Hub API", spec_url: str = OPENAPI_30_PATH
) -> list[BaseRoute]:
    """``GET /docs`` and its static assets under ``/docs/static``."""
    page = docs_html(spec_url, title)

    async def docs(request: Request) -> Response:
        return HTMLResponse(page)

    return [
        Route(DOCS_PATH, docs, methods=["GET"]),
        Mount(STATIC_PATH, app=_Assets(directory=swagger_ui_dir()), name="docs-static"),
    ]


__all__ = ["ASSETS", "DOCS_PATH", "STATIC_PATH", "docs_html", "docs_routes", "swagger_ui_dir"]

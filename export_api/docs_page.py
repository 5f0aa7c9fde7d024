"""`GET /docs` (SPEC §6): Swagger UI 5 for /openapi.json, its JS/CSS from the pinned `swagger-ui-py` package
served by this process, so the page needs nothing from elsewhere (its Content-Security-Policy allows nothing else).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from export_api.routing import ApiRoute

router = APIRouter(route_class=ApiRoute, tags=["meta"])

SWAGGER_DIR = str(files("swagger_ui") / "static")  # swagger-ui-py's copy of Swagger UI 5
ASSETS = "/docs/assets"
# Everything the page needs comes from this origin; inline styles are Swagger UI's own.
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)
DOCS_HTML = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>export-service API</title>
  <link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{ASSETS}/swagger-ui-bundle.js"></script>
  <script src="{ASSETS}/swagger-ui-standalone-preset.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""
# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
DOCS_INIT_JS = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout"
  });
};
"""


@router.get(
    "/docs",
    summary="Interactive API documentation (Swagger UI)",
    operation_id="getDocs",
    response_class=HTMLResponse,
    response_description="The HTML page.",
)
async def docs(request: Request) -> Response:
    """Interactive Swagger UI for /openapi.json, with assets served by this process."""
    return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/docs/init.js", include_in_schema=False)
async def docs_init(request: Request) -> Response:
    return Response(DOCS_INIT_JS, media_type="text/javascript")


# The assets, under the page (a Mount: FastAPI's static files are Starlette's).
assets = Mount(ASSETS, app=StaticFiles(directory=SWAGGER_DIR), name="docs-assets")

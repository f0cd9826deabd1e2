"""The operators' dashboard: `GET /api/dashboard` and its assets, served by the app itself (no build step,
nothing from a CDN: the Content-Security-Policy allows this origin only).

The page and assets are anonymous and hold no data; the page calls the same API as everyone else with the
caller's function key (`x-functions-key`, taken from `?code=` once or typed in, kept in sessionStorage).
In Azure, put App Service Authentication (Entra ID) in front of the app to keep the page itself private
(docs/dashboard.md; infra parameter `dashboardAuthClientId`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import azure.functions as func
from opentelemetry.trace import SpanKind

from shared.composition import Components
from shared.core.telemetry import traced

ROOT = Path(__file__).resolve().parents[2] / "dashboard"
ASSETS = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL may carry ?code=
    "Cache-Control": "no-cache",
}


def asset(name: str) -> func.HttpResponse:
    """One of ASSETS (a fixed list: a route value never becomes a path), else 404."""
    if name not in ASSETS:
        return func.HttpResponse("not found", status_code=404, headers=HEADERS)
    return func.HttpResponse((ROOT / name).read_bytes(), status_code=200,
                             headers={**HEADERS, "Content-Type": ASSETS[name]})


def to_page(req: func.HttpRequest) -> func.HttpResponse:
    """301 to the page's one address, `.../dashboard` (query kept, e.g. `?code=`): from `.../dashboard/` or
    `.../dashboard/index.html` the page's relative asset and API paths would resolve one level too deep."""
    query = urlsplit(req.url).query
    return func.HttpResponse(status_code=301, headers={**HEADERS, "Location": "../dashboard" + (
        f"?{query}" if query else "")})


def blueprint(components: Callable[[], Components]) -> func.Blueprint:
    """This module's triggers (components unused: the page only calls the API from the browser)."""
    bp = func.Blueprint()

    @bp.route(route="dashboard", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    @traced(SpanKind.SERVER)
    def get_dashboard(req: func.HttpRequest) -> func.HttpResponse:
        if urlsplit(req.url).path.endswith("/"):
            return to_page(req)
        return asset("index.html")

    @bp.route(route="dashboard/{asset}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    @traced(SpanKind.SERVER)
    def get_dashboard_asset(req: func.HttpRequest) -> func.HttpResponse:
        name = str(req.route_params.get("asset", ""))
        return to_page(req) if name == "index.html" else asset(name)

    return bp

"""Building `func.HttpResponse`s the way ARM and Logic Apps expect them.

The async request-reply pattern: `202 Accepted` + `Location` (absolute) + `Retry-After` (seconds)
while work runs, then `200` with the result at that Location. Logic Apps' HTTP action follows
this by itself.

Where a Location (or a `nextLink`) points, and what it carries:
- The origin is the app's own: `https://` + `WEBSITE_HOSTNAME`, which App Service sets for every app
  (its default host name, `<app>.azurewebsites.net`; updated on a slot swap, so it is read per
  request) and Core Tools sets to `localhost:<port>` (the local host does the same). Never the
  request's `Host` header: a caller (or anything between) chooses that, and `Host: attacker.example`
  would send the follow-up GET, and the function key in it, elsewhere. A loopback host name keeps
  the request's scheme (a local host runs plain http); any other gets https.
- A function key goes in only as the caller sent it: Functions takes the key in the `code` query
  parameter or the `x-functions-key` header (learn.microsoft.com/azure/azure-functions/
  function-keys-how-to). A caller that used `?code=` polls the URL it is given, so the key must be in
  it or the GET is a 401 (Durable Functions' status URLs carry a `code=` as well); a caller
  that used the header resends its header, so nothing is added and the key never lands in a URL,
  where logs would keep it. The key only ever goes back to the app it came to.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import azure.functions as func
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared.core.errors import ApiError, arm_error_body
from shared.core.settings import SettingsError, is_loopback_host
from shared.core.telemetry import traced

log = logging.getLogger(__name__)
JSON = "application/json; charset=utf-8"
# A DNS name or an IPv4/[IPv6] literal, with an optional port: nothing that could carry a path or userinfo.
_HOST_NAME = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
                        r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?", re.ASCII)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, separators=(",", ":")), status_code=status,
                             headers={"Content-Type": JSON, **(headers or {})})


def error_response(error: ApiError) -> func.HttpResponse:
    return json_response(error.body(), error.status)


def public_origin(req: func.HttpRequest) -> str:
    """`scheme://host[:port]` of this app, from WEBSITE_HOSTNAME (see the module docstring).

    Raises SettingsError (a 500 `Misconfigured`) when it is missing or not a bare host name, so a
    handler calls it before it writes anything.
    """
    host = os.environ.get("WEBSITE_HOSTNAME", "").strip().lower()
    if not _HOST_NAME.fullmatch(host):
        raise SettingsError("WEBSITE_HOSTNAME must be this app's host name (App Service and Core Tools set it), "
                            f"got {host[:100]!r}")
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    scheme = urlsplit(req.url).scheme if is_loopback_host(name) else "https"
    return f"{scheme if scheme in ('http', 'https') else 'https'}://{host}"


def absolute_url(req: func.HttpRequest, path: str, query: dict[str, str] | None = None) -> str:
    """An absolute URL on this app's own origin, with the caller's `?code=` key if it sent one there."""
    params = {k: v for k, v in parse_qsl(urlsplit(req.url).query) if k == "code"}
    params.update(query or {})
    return urlunsplit((*urlsplit(public_origin(req))[:2], path, urlencode(params), ""))


def accepted(body: Any, location: str, retry_after: int) -> func.HttpResponse:
    return json_response(body, 202, {"Location": location, "Retry-After": str(retry_after)})


Handler = Callable[[func.HttpRequest], func.HttpResponse]


def api_errors(handler: Handler) -> Handler:
    """Turn ApiError into its ARM-shaped answer; anything else is a 500 in the same shape. One SERVER span
    per invocation, named after the handler, with the method and the status answered."""

    @traced(SpanKind.SERVER)  # after wraps: the span takes the handler's name
    @wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
        answer = _answer(req)
        trace.get_current_span().set_attributes({"http.request.method": req.method,
                                                 "http.response.status_code": answer.status_code})
        return answer

    def _answer(req: func.HttpRequest) -> func.HttpResponse:
        try:
            return handler(req)
        except ApiError as exc:
            return error_response(exc)
        except SettingsError as exc:
            log.exception("misconfigured")
            return json_response(arm_error_body("Misconfigured", str(exc)), 500)
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return json_response(arm_error_body("InternalServerError", "an unexpected error occurred; "
                                                "see the function logs"), 500)

    return wrapper

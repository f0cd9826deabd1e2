"""Building `func.HttpResponse`s the way ARM and Logic Apps expect them.

The async request-reply pattern: `202 Accepted` + `Location` (absolute) + `Retry-After` (seconds)
while work runs, then `200` with the result at that Location. Logic Apps' HTTP action follows
this by itself. When the caller authenticated with a function key in the query (`?code=`), the
Location carries it too, or the follow-up GET would be rejected with 401.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import azure.functions as func

from shared.core.errors import ApiError, arm_error_body
from shared.core.settings import SettingsError

log = logging.getLogger(__name__)
JSON = "application/json; charset=utf-8"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, separators=(",", ":")), status_code=status,
                             headers={"Content-Type": JSON, **(headers or {})})


def error_response(error: ApiError) -> func.HttpResponse:
    return json_response(error.body(), error.status)


def absolute_url(req: func.HttpRequest, path: str, query: dict[str, str] | None = None) -> str:
    """An absolute URL on the same origin as the request, keeping a function key if one was used."""
    parts = urlsplit(req.url)
    params = {k: v for k, v in parse_qsl(parts.query) if k == "code"}
    params.update(query or {})
    return str(urlunsplit((parts.scheme, parts.netloc, path, urlencode(params), "")))


def accepted(body: Any, location: str, retry_after: int) -> func.HttpResponse:
    return json_response(body, 202, {"Location": location, "Retry-After": str(retry_after)})


Handler = Callable[[func.HttpRequest], func.HttpResponse]


def api_errors(handler: Handler) -> Handler:
    """Turn ApiError into its ARM-shaped answer; anything else is a 500 in the same shape."""

    @wraps(handler)
    def wrapper(req: func.HttpRequest) -> func.HttpResponse:
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

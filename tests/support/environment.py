"""Environment variables a test sets for the code under test."""

from __future__ import annotations

import pytest

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def proxy_environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Only `variables` of the proxy settings (urllib reads either case, lowercase first; REQUEST_METHOD, a CGI
    request's, makes it ignore HTTP_PROXY)."""
    for name in (*PROXY_VARIABLES, *(v.upper() for v in PROXY_VARIABLES), "REQUEST_METHOD"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)

"""Decisions read every page: Table storage may answer a filtered query with an empty page and a
continuation token (a partition scan that ran out of time or hit a partition boundary), which is not
"nothing matches". A store that pages that way, without Azurite (which never does)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from shared.storage.run_store import RunStore, first_match


class _Paged:
    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self._pages = pages

    def by_page(self, continuation_token: Any = None) -> Iterator[list[dict[str, Any]]]:
        return iter(self._pages)


class PagingTable:
    """A TableClient stand-in whose filtered queries answer empty pages before the matching one."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.queries: list[tuple[str, dict[str, Any]]] = []

    def query_entities(self, query: str, *, parameters: dict[str, Any] | None = None, **_: Any) -> _Paged:
        self.queries.append((query, parameters or {}))
        return _Paged(self.pages)


def test_first_match_reads_past_empty_pages() -> None:
    assert first_match(PagingTable([[], [], [{"RowKey": "a"}]]), "x eq @v", {"v": 1}) is True  # type: ignore[arg-type]
    assert first_match(PagingTable([[], []]), "x eq @v", {"v": 1}) is False  # type: ignore[arg-type]


def test_a_run_with_an_unfinished_machine_behind_an_empty_page_is_not_closed() -> None:
    store = RunStore.__new__(RunStore)  # no storage account: only the targets table is used here
    store._count = lambda op: None  # type: ignore[method-assign]
    table = PagingTable([[], [{"RowKey": "sub|rg|vm"}]])
    store.targets = table  # type: ignore[assignment]
    assert store.has_unfinished_targets("run-1") is True
    query, parameters = table.queries[0]
    assert "@run" in query and parameters["run"] == "run-1"  # a parameter, never spliced into the filter

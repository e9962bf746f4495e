"""``Connection.url``: the URL httpx would build for a path and query, parsed once."""

from __future__ import annotations

import pytest

from gateway.client._transport import Connection


@pytest.mark.parametrize(
    "params",
    [None, {"wait": "true"}, {"a": True, "b": 3, "gone": None, "many": ["x", "y"]}, {"q": "a b/é&="}],
)
async def test_it_is_the_url_httpx_builds_from_the_base(params: dict[str, object] | None) -> None:
    conn = Connection("http://127.0.0.1:8000/", None, 10)
    try:
        kept = {k: v for k, v in (params or {}).items() if v is not None}
        built = conn.http.build_request("POST", "/conversation/x/task", params=kept).url
        assert conn.url("/conversation/x/task", params) == built
        assert conn.url("/conversation/x/task", params) is conn.url("/conversation/x/task", params)
    finally:
        await conn.aclose()


async def test_other_paths_and_queries_get_their_own() -> None:
    conn = Connection("http://127.0.0.1:8000", None, 10)
    try:
        assert str(conn.url("/a", {"wait": "true"})) == "http://127.0.0.1:8000/a?wait=true"
        assert str(conn.url("/a", {"wait": "false"})) == "http://127.0.0.1:8000/a?wait=false"
        assert str(conn.url("/b")) == "http://127.0.0.1:8000/b"
    finally:
        await conn.aclose()

"""What of a client's request reaches the agent: the path and the query.

The path is built from the route's *decoded* parameters, percent-encoded again,
never taken from the raw path: a client's own encoding (``%2F``, ``%2E``) cannot
make the agent see another route than the one the gateway matched and declares.
The query goes as the client sent it, less the caller's ``token``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote_plus

from starlette.convertors import PathConvertor
from starlette.requests import HTTPConnection
from starlette.routing import compile_path


def _quote_segment(text: str) -> str:
    quoted = quote(text, safe="")
    # Dot segments are escaped too: nothing between here and the agent may resolve them.
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


class UpstreamPath:
    """The agent's path of one proxied route, e.g. ``/file/{path:path}``.

    :meth:`build` fills it from the request's *decoded* path parameters, each
    percent-encoded again (a path parameter segment by segment, keeping its
    ``/``): whatever the client's encoding, the agent sees this route and no
    other, with the same parameter values the gateway matched.
    """

    def __init__(self, template: str) -> None:
        self.template = template
        _, self._format, self._convertors = compile_path(template)

    def build(self, path_params: Mapping[str, Any]) -> str:
        path = self._format
        for name, convertor in self._convertors.items():
            value = convertor.to_string(path_params[name])
            if isinstance(convertor, PathConvertor):
                quoted = "/".join(_quote_segment(segment) for segment in value.split("/"))
            else:
                quoted = _quote_segment(value)
            path = path.replace("{" + name + "}", quoted)
        return path


def upstream_query(request: HTTPConnection) -> str:
    """The query string for the agent: as the client sent it, less every ``token``
    parameter, matched by its decoded name as the gateway's auth reads it (``%74oken``)."""
    query: str = request.scope.get("query_string", b"").decode("latin-1")
    if "token" not in query and "%" not in query:
        return query
    # The caller's key may be in ?token=: it stays here.
    return "&".join(part for part in query.split("&") if unquote_plus(part.split("=", 1)[0]) != "token")

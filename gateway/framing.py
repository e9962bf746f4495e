"""``Framing``: what a request's head says of its body, read in one scan of its headers.

The request guard (:mod:`gateway.guard`), the proxy (:mod:`gateway.proxy`) and its fast
lane (:mod:`gateway.proxy_fastlane`) each need the same few facts of a request's head:
whether it declares a body, its ``Content-Length``, whether it is chunked, whether it
``Expect``s ``100-continue``. :func:`framing_of` reads them once per request (the
scope keeps them), so no layer scans the headers again.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import Scope

#: Where :func:`framing_of` keeps a scope's framing (a request's headers do not change).
_KEY = "convoy.framing"
#: Request bodies up to this size (declared) are read whole and sent with their head.
SMALL_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Framing:
    """``length``: the raw ``Content-Length`` value (the first), ``None`` without one;
    ``chunked``: a ``Transfer-Encoding`` header came; ``expects``: the raw ``Expect`` value."""

    length: bytes | None
    chunked: bool
    expects: bytes | None

    @property
    def declared(self) -> int | None:
        """The declared length, ``None`` when the request declares none (or not as digits)."""
        length = self.length
        return int(length) if length is not None and length.isdigit() else None

    @property
    def has_body(self) -> bool:
        """A ``Transfer-Encoding``, or a ``Content-Length`` other than ``0``."""
        return self.chunked or (self.length is not None and self.length != b"0")

    @property
    def continues(self) -> bool:
        """``Expect: 100-continue``."""
        return self.expects is not None and self.expects.lower() == b"100-continue"

    @property
    def small(self) -> bool:
        """A body of a declared length up to :data:`SMALL_BODY_BYTES`, not chunked, no ``Expect``:
        read whole and sent with its head (a length of 0 is one too)."""
        declared = self.declared
        return (
            not self.chunked
            and self.expects is None
            and declared is not None
            and declared <= SMALL_BODY_BYTES
        )


def read_framing(headers: list[tuple[bytes, bytes]]) -> Framing:
    """The framing of a request with these (lower-cased, as ASGI gives them) headers."""
    length: bytes | None = None
    chunked = False
    expects: bytes | None = None
    for name, value in headers:
        if name == b"content-length":
            if length is None:
                length = value
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect" and expects is None:
            expects = value
    return Framing(length, chunked, expects)


def framing_of(scope: Scope) -> Framing:
    """The framing of the request of ``scope``, read once and kept in it."""
    found = scope.get(_KEY)
    if found is None:
        found = scope[_KEY] = read_framing(scope["headers"])
    assert isinstance(found, Framing)
    return found

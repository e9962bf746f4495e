"""A tiny TCP balancer: several gateways of one installation behind one address.

``python -m gateway.balancer --listen 0.0.0.0:8000 --backend gateway-a:8000 --backend gateway-b:8000``

Each client connection goes to the next backend in turn (round robin) and stays
with it for its life (HTTP keep-alive and WebSockets alike: bytes are copied
both ways, nothing is parsed). A backend that refuses a connection is skipped
for ``--down-for`` seconds and the next one is tried, so a gateway killed or
restarting costs its clients one reconnect, never an error from the balancer
while another gateway answers. Any gateway serves any conversation (see
:mod:`gateway.reconciling`), which is why no stickiness is needed.

It ships in the gateway image for the compose file of two gateways
(``docker-compose.gateways.yml``) because no registry is reachable to pull a
proxy image; where one is, nginx or HAProxy in TCP mode do the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

log = logging.getLogger("convoy.balancer")

_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Address:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise argparse.ArgumentTypeError(f"{text!r} is not host:port")
        return cls(host, int(port))

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Balancer:
    def __init__(
        self, backends: Sequence[Address], down_for: float = 2.0, connect_timeout: float = 3.0
    ) -> None:
        if not backends:
            raise ValueError("at least one backend")
        self._backends = list(backends)
        self._turn = itertools.cycle(range(len(self._backends)))
        self._down_until = [0.0] * len(self._backends)
        self._down_for = down_for
        self._connect_timeout = connect_timeout

    @property
    def backends(self) -> list[Address]:
        return list(self._backends)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next backend that answers (skipping those down lately; all, when all are)."""
        first = next(self._turn)
        order = [(first + n) % len(self._backends) for n in range(len(self._backends))]
        now = time.monotonic()
        up = [index for index in order if self._down_until[index] <= now]
        for index in up or order:
            backend = self._backends[index]
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(backend.host, backend.port), self._connect_timeout
                )
            except (OSError, TimeoutError) as error:
                log.warning(
                    "backend %s does not answer (%s): skipped for %gs", backend, error, self._down_for
                )
                self._down_until[index] = time.monotonic() + self._down_for
        return None

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream = await self._connect()
            if upstream is None:
                return  # no backend answers: the client sees its connection closed
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
            finally:
                await _close(up_writer)
        finally:
            await _close(writer)


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Bytes from ``source`` to ``sink`` until ``source`` ends; then half-closes ``sink``."""
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()  # a slow reader slows its writer: memory stays bounded
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()  # one side broke: so does the other, and the copy the other way ends


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.wait_closed()


async def serve(listen: Address, balancer: Balancer) -> None:
    server = await asyncio.start_server(balancer.serve_client, listen.host, listen.port)
    log.info("balancing %s over %s", listen, ", ".join(map(str, balancer.backends)))
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.balancer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=Address.parse, default=Address("0.0.0.0", 8000))
    parser.add_argument("--backend", type=Address.parse, action="append", required=True)
    parser.add_argument("--down-for", type=float, default=2.0, help="seconds a refusing backend is skipped")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args.listen, Balancer(args.backend, args.down_for)))


if __name__ == "__main__":
    main()

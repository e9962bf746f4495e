"""convoy egress enforcer: a sandbox's only way out, to the hosts of its allow-list.

Runs in the relay container, beside the agent relay (``relay.py`` starts it as
its companion), never in the sandbox: the sandbox sits alone on an internal
network whose only other member is the relay, so it has no route anywhere
else, and nothing a task does can turn this off.

Usage: ``python -E -s egress.py CONFIG_JSON`` with ``listen`` (the relay's address
on the conversation's network), ``proxy_port``, ``dns_port``, ``clients`` (the
sandbox's address: nobody else is served), ``resolver`` (``ip`` or ``ip:port``
of the upstream DNS server; empty: this container's resolv.conf) and ``allow``
(normalised entries: ``name``, ``*.name`` for every name below it, CIDRs).

Once both servers are bound it writes one line to stdout (the relay waits for
it before it listens, so nothing reaches the agent before egress works).

Contract:

- HTTP proxy on ``listen:proxy_port``. ``CONNECT host:port`` (HTTPS, or any TCP)
  is tunnelled when ``host`` is an allowed name or an address in an allowed
  network; through a tunnel to a name, a TLS ClientHello must name (SNI) an
  allowed server or none, else the tunnel is closed before it is passed on (a
  CDN in front of an allowed site cannot be asked for another); plain HTTP
  (``GET http://host/...``) is forwarded, one request per connection, when its
  URI's host is allowed (the ``Host`` header is set from the URI, so it cannot
  name another site on the same server). Anything else
  gets 403 (not allowed), 400 (not a proxy request) or 502 (upstream down).
  Names are resolved with the upstream resolver; addresses they resolve to that
  are loopback, link-local, multicast, unspecified or on a network this
  container is on (other relays, the host's bridge address) are refused unless
  an allowed network holds them. A name that is not allowed is never looked up.
- DNS on ``listen:dns_port`` (UDP): a query for an allowed name (types A, AAAA,
  CNAME, HTTPS) is forwarded to the upstream resolver and its answer returned;
  every other query gets REFUSED, and nothing of it leaves the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import dns.exception
import h11

# The script's directory is on sys.path (the relay runs it with -E -s, not -I).
from egress_dns import DnsServer, make_resolver
from egress_rules import TLS_HANDSHAKE, Address, Policy, address_of, connected_networks, server_name, special

CONNECT_TIMEOUT = 10.0
MAX_CONNECTIONS = 256
CHUNK = 64 * 1024
TLS_RECORD_MAX = 5 + 16 * 1024 + 256
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"proxy-authenticate",
    b"te",
    b"trailer",
    b"upgrade",
    b"host",
}


class Refused(Exception):
    """The target is not allowed (403) or cannot be reached (502); ``str()`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass
class Downstream:
    """The sandbox's side of one proxy connection: its HTTP/1.1 state and its stream."""

    http: h11.Connection
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def next_event(self) -> Any:
        return await _next_event(self.http, self.reader)

    def send(self, *events: Any) -> None:
        """Writes ``events`` (h11's serialisation of them, in one write); the caller drains."""
        self.writer.write(b"".join(self.http.send(event) or b"" for event in events))


class Enforcer:
    """The proxy and the DNS server of one sandbox, over one allow-list (see the module docstring)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.policy = Policy(config["allow"])
        self.clients = set(config["clients"])
        self.listen = str(config["listen"])
        self.proxy_port, self.dns_port = int(config["proxy_port"]), int(config["dns_port"])
        self.resolver = make_resolver(str(config["resolver"]))
        self.slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.local_networks = connected_networks()

    # --- names ------------------------------------------------------------------------

    async def addresses(self, host: str) -> list[str]:
        """Where ``host`` may be reached; :class:`Refused` when nowhere."""
        literal = address_of(host)
        if literal is not None:
            if not self.policy.allows_address(literal):
                raise Refused(403, f"{host} is not in the egress allow-list")
            return [str(literal)]
        if not self.policy.allows_name(host):
            raise Refused(403, f"{host} is not in the egress allow-list")
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            with contextlib.suppress(dns.exception.DNSException):
                answer = await self.resolver.resolve(host, rdtype)
                found += [record.address for record in answer]
        usable = [address for address in found if self.reachable(ipaddress.ip_address(address))]
        if not usable:
            raise Refused(502, f"{host} does not resolve to a reachable address")
        return usable

    def reachable(self, address: Address) -> bool:
        """Whether an address an allowed name resolved to may be connected to."""
        if self.policy.allows_address(address):
            return True
        return not special(address) and not any(address in network for network in self.local_networks)

    async def connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last = ""
        for address in await self.addresses(host):
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    return await asyncio.open_connection(address, port)
            except (OSError, TimeoutError) as error:
                last = f"{address}: {error!r}"
        raise Refused(502, f"cannot connect to {host}:{port} ({last})")

    # --- the proxy --------------------------------------------------------------------

    async def serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        try:
            if not peer or peer[0] not in self.clients:
                return
            async with self.slots:
                await self.proxy(reader, writer)
        except (OSError, h11.ProtocolError, TimeoutError):
            pass
        finally:
            writer.close()

    async def proxy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Downstream(h11.Connection(h11.SERVER), reader, writer)
        request = await client.next_event()
        if not isinstance(request, h11.Request):
            return
        try:
            if request.method == b"CONNECT":
                await self.tunnel(request, client)
            else:
                await self.forward(request, client)
        except Refused as refusal:
            _log(f"refused {request.method.decode()} {request.target.decode(errors='replace')}: {refusal}")
            if client.http.our_state is h11.SEND_RESPONSE:
                body = f"{refusal}\n".encode()
                headers = [("content-type", "text/plain"), ("content-length", str(len(body)))]
                client.send(h11.Response(status_code=refusal.status, headers=headers))
                client.send(h11.Data(data=body), h11.EndOfMessage())
                await writer.drain()

    async def tunnel(self, request: h11.Request, client: Downstream) -> None:
        host, _, port = request.target.decode("ascii", errors="replace").rpartition(":")
        if not host or not port.isdigit():
            raise Refused(400, "CONNECT wants host:port")
        host = host.strip("[]")
        up_reader, up_writer = await self.connect(host, int(port))
        try:
            client.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            # Server-first protocols (SSH, SMTP) get their greeting while the client's first bytes are read.
            downstream = asyncio.ensure_future(_pipe(up_reader, client.writer))
            try:
                first = await _first_record(client.reader, client.http.trailing_data[0])
                if address_of(host) is None:
                    self.check_server_name(host, first)
                up_writer.write(first)
                await _pipe(client.reader, up_writer)
                await downstream
            finally:
                downstream.cancel()
        finally:
            up_writer.close()

    def check_server_name(self, host: str, first: bytes) -> None:
        """A TLS ClientHello through a tunnel to a name must name an allowed server (SNI): the
        CONNECT host alone would let a shared front (a CDN) be asked for any site behind it."""
        try:
            name = server_name(first)
        except ValueError as error:
            _log(f"closed the tunnel to {host}: {error}")
            raise OSError("unreadable ClientHello") from None
        if name is not None and not self.policy.allows_name(name):
            _log(f"closed the tunnel to {host}: TLS server name {name} is not in the egress allow-list")
            raise OSError("server name not allowed")

    async def forward(self, request: h11.Request, client: Downstream) -> None:
        try:
            url = urlsplit(request.target.decode("ascii", errors="replace"))
            host, port = url.hostname, url.port or 80
        except ValueError:
            raise Refused(400, "the request's URI cannot be read") from None
        if url.scheme != "http" or not host:
            raise Refused(400, "this is a proxy: ask for an absolute http:// URI, or CONNECT for https")
        up_reader, up_writer = await self.connect(host, port)
        try:
            await self.exchange(request, url.netloc, url.path or "/", url.query, client, up_reader, up_writer)
        finally:
            up_writer.close()

    async def exchange(
        self,
        request: h11.Request,
        netloc: str,
        path: str,
        query: str,
        client: Downstream,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        upstream = h11.Connection(h11.CLIENT)
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        target = path + (f"?{query}" if query else "")
        headers = [(b"host", netloc.rpartition("@")[2].encode()), *headers, (b"connection", b"close")]
        up_writer.write(
            upstream.send(h11.Request(method=request.method, target=target, headers=headers)) or b""
        )
        while True:  # the request body, as the client sends it
            event = await client.next_event()
            if isinstance(event, h11.Data):
                up_writer.write(upstream.send(event) or b"")
                await up_writer.drain()
            elif isinstance(event, h11.EndOfMessage):
                up_writer.write(upstream.send(h11.EndOfMessage()) or b"")
                break
            else:
                return
        response = await _next_event(upstream, up_reader)
        while isinstance(response, h11.InformationalResponse):
            response = await _next_event(upstream, up_reader)
        if not isinstance(response, h11.Response):
            raise Refused(502, "the upstream server sent no response")
        out_headers = [(k, v) for k, v in response.headers if k.lower() not in HOP_BY_HOP]
        out_headers.append((b"connection", b"close"))
        client.send(
            h11.Response(status_code=response.status_code, headers=out_headers, reason=response.reason)
        )
        while True:
            event = await _next_event(upstream, up_reader)
            if isinstance(event, h11.Data):
                client.send(event)
                await client.writer.drain()
            else:
                client.send(h11.EndOfMessage())
                await client.writer.drain()
                return

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: DnsServer(self.policy, self.clients, self.resolver),
            local_addr=(self.listen, self.dns_port),
        )
        server = await asyncio.start_server(self.serve_client, self.listen, self.proxy_port, backlog=128)
        # The relay waits for this line before it lets anyone reach the agent; nothing else goes to stdout.
        print("serving", flush=True)
        sys.stdout.close()
        async with server:
            await server.serve_forever()


async def _next_event(connection: h11.Connection, reader: asyncio.StreamReader) -> Any:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(await reader.read(CHUNK))


async def _first_record(reader: asyncio.StreamReader, early: bytes) -> bytes:
    """The client's first bytes: when they start a TLS record, that whole record (up to 16 KiB)."""
    data = early or await reader.read(CHUNK)
    if not data or data[0] != TLS_HANDSHAKE:
        return data
    while len(data) < 5 or len(data) < 5 + int.from_bytes(data[3:5], "big"):
        if len(data) > TLS_RECORD_MAX or not (more := await reader.read(CHUNK)):
            break
        data += more
    return data


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


def _log(message: str) -> None:
    print(f"egress: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: egress.py CONFIG_JSON")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(Enforcer(json.loads(sys.argv[1])).run())

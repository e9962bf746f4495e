"""The egress enforcer's DNS server: allowed names are asked upstream, all else is REFUSED.

Part of ``egress.py`` (see there). Queries are answered for the sandbox's
address only; a query for a name outside the allow-list never leaves the
container, so DNS cannot carry data out.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, cast

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from egress_rules import Policy

DNS_TIMEOUT = 4.0
MAX_PENDING = 256
DNS_TYPES = {dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.HTTPS}


def make_resolver(upstream: str) -> dns.asyncresolver.Resolver:
    """A resolver asking ``upstream`` (``ip`` or ``ip:port``; empty: this container's resolv.conf)."""
    resolver = dns.asyncresolver.Resolver(configure=not upstream)
    if upstream:
        host, _, port = upstream.rpartition(":")
        if not host or ":" in host:  # a bare address (IPv4 without a port, or IPv6)
            host, port = upstream, "53"
        resolver.nameservers = [host]
        resolver.port = int(port)
    resolver.lifetime = DNS_TIMEOUT
    return resolver


class DnsServer(asyncio.DatagramProtocol):
    """Serves ``clients`` only; answers each query in a task of its own (at most ``MAX_PENDING``)."""

    def __init__(self, policy: Policy, clients: set[str], resolver: dns.asyncresolver.Resolver) -> None:
        self.policy, self.clients, self.resolver = policy, clients, resolver
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if addr[0] not in self.clients or len(self.pending) >= MAX_PENDING:
            return
        task = asyncio.ensure_future(self.reply(data, addr))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def reply(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = await self.answer(data)
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)

    async def answer(self, wire: bytes) -> bytes | None:
        """The reply to one DNS query (``None``: not even a query, no reply)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        if len(query.question) == 1 and query.opcode() == 0:
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True)
            if question.rdtype in DNS_TYPES and self.policy.allows_name(name):
                try:
                    upstream = await self._upstream(query)
                    return upstream.to_wire()
                except (dns.exception.DNSException, OSError) as error:
                    _log(f"dns upstream failed for {name}: {error!r}")
                    reply = dns.message.make_response(query)
                    reply.set_rcode(dns.rcode.SERVFAIL)
                    return reply.to_wire()
            _log(f"refused dns {name} {dns.rdatatype.to_text(question.rdtype)}")
        reply = dns.message.make_response(query)
        reply.set_rcode(dns.rcode.REFUSED)
        return reply.to_wire()

    async def _upstream(self, query: dns.message.Message) -> dns.message.Message:
        where, port = self.resolver.nameservers[0], self.resolver.port
        answer = await dns.asyncquery.udp(query, str(where), timeout=DNS_TIMEOUT, port=port)
        if answer.flags & dns.flags.TC:
            answer = await dns.asyncquery.tcp(query, str(where), timeout=DNS_TIMEOUT, port=port)
        return answer


def _log(message: str) -> None:
    print(f"egress: {message}", file=sys.stderr, flush=True)

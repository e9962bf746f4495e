"""convoy relay: the only way into a sandbox from outside its network.

A sandbox sits alone on its own internal network that has no address on the
host (``com.docker.network.bridge.inhibit_ipv4``): it can reach neither the
internet, nor the host, nor another sandbox. This relay is the one other
member of that network; it is also on a network the gateway reaches (a port
published on 127.0.0.1, or a shared network) and forwards every TCP connection
it accepts, byte for byte, to the agent at ``TARGET_HOST:TARGET_PORT``.

Usage: ``python3 -I -S relay.py LISTEN_PORT TARGET_HOST TARGET_PORT [-- COMMAND...]``.

``COMMAND``, when given, is a companion started first (the egress enforcer,
``egress.py``, for a conversation with an allow-list). The relay listens only
once the companion has written a line to its stdout (it serves), so an agent
that answers through the relay is never ahead of it; and it exits with status 1
as soon as the companion ends (or ends before that line, or takes over
``COMPANION_TIMEOUT``), so the conversation is seen to have lost its relay rather
than silently losing what the companion enforced.

Contract, per accepted connection: the relay connects to the target (the
client's connection is closed when that fails or takes over
``CONNECT_TIMEOUT``); then bytes flow both ways as they come, with at most
``CHUNK`` bytes held per direction (a slow reader slows its writer). An EOF
in one direction is passed on as a half-close and the other direction goes
on; a reset or error on either side closes both. SIGTERM/SIGINT: exit 0.

One thread and a ``selectors`` loop over plain sockets, standard library only:
it runs once per conversation, so it imports as little as it can (asyncio
alone would more than double its resident memory).
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import sys
import time

CHUNK = 256 * 1024
CONNECT_TIMEOUT = 5.0
BACKLOG = 512
COMPANION_TIMEOUT = 30.0


class Side:
    """One socket of a relayed connection: what it still has to write, and its state."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = memoryview(b"")  # read from the peer, not yet written here
        self.read_done = False  # EOF read from this socket
        self.write_closed = False  # the peer's EOF passed on (shutdown SHUT_WR)


class Link:
    """A client connection and its upstream connection to the target."""

    def __init__(self, relay: Relay, client: socket.socket, upstream: socket.socket) -> None:
        self.relay = relay
        self.client, self.upstream = Side(client), Side(upstream)
        self.connected = False
        self.deadline = time.monotonic() + CONNECT_TIMEOUT
        self.closed = False

    def peer(self, side: Side) -> Side:
        return self.upstream if side is self.client else self.client

    def on_connect(self) -> None:
        error = self.upstream.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self.close()  # the agent is not listening (yet): the caller sees the connection close
            return
        self.connected = True
        for side in (self.client, self.upstream):
            side.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.update()

    def on_readable(self, side: Side) -> None:
        peer = self.peer(side)
        try:
            data = side.sock.recv(CHUNK)
        except BlockingIOError:
            return
        if not data:
            side.read_done = True
        else:
            sent = _send(peer.sock, data)
            peer.pending = memoryview(data)[sent:]
        self.flush(peer)

    def on_writable(self, side: Side) -> None:
        side.pending = side.pending[_send(side.sock, side.pending) :]
        self.flush(side)

    def flush(self, side: Side) -> None:
        """Pass the peer's EOF on once everything before it is written; close when both are done."""
        if not side.pending and self.peer(side).read_done and not side.write_closed:
            side.write_closed = True
            side.sock.shutdown(socket.SHUT_WR)
        if self.client.write_closed and self.upstream.write_closed:
            self.close()
        else:
            self.update()

    def update(self) -> None:
        """Register what each socket waits for: reads only while its peer has nothing pending."""
        for side in (self.client, self.upstream):
            peer = self.peer(side)
            events = 0
            if side.pending:
                events |= selectors.EVENT_WRITE
            if not side.read_done and not peer.pending:
                events |= selectors.EVENT_READ
            self.relay.watch(side.sock, events, (self, side))

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.upstream):
            self.relay.watch(side.sock, 0, None)
            side.sock.close()
        self.relay.links.discard(self)


class Relay:
    def __init__(self, listen_port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.selector = selectors.DefaultSelector()
        self.links: set[Link] = set()
        self.listener = socket.create_server(("0.0.0.0", listen_port), backlog=BACKLOG)
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, None)

    def watch(self, sock: socket.socket, events: int, data: tuple[Link, Side] | None) -> None:
        """Wait for ``events`` on ``sock`` (0: stop watching it)."""
        key = self.selector.get_map().get(sock)
        if key is None:
            if events:
                self.selector.register(sock, events, data)
        elif not events:
            self.selector.unregister(sock)
        elif key.events != events:
            self.selector.modify(sock, events, data)

    def accept(self) -> None:
        for _ in range(BACKLOG):
            try:
                client, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError:
                time.sleep(0.05)  # out of descriptors or the like: let closing connections free some
                return
            self.open(client)

    def open(self, client: socket.socket) -> None:
        """Start connecting to the target for ``client``; :meth:`Link.on_connect` follows."""
        client.setblocking(False)
        upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        link = Link(self, client, upstream)
        self.links.add(link)
        if upstream.connect_ex(self.target) not in (0, errno.EINPROGRESS):
            link.close()
            return
        self.watch(upstream, selectors.EVENT_WRITE, (link, link.upstream))

    def watch_companion(self, pidfd: int) -> None:
        """The companion's end (its pidfd turning readable) ends the relay."""
        self.selector.register(pidfd, selectors.EVENT_READ, "companion")

    def run(self) -> None:
        while True:
            waiting = [link.deadline for link in self.links if not link.connected]
            timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else None
            for key, events in self.selector.select(timeout):
                if key.data is None:
                    self.accept()
                    continue
                if key.data == "companion":
                    sys.exit("relay: the companion process ended")
                link, side = key.data
                if not link.closed:
                    self.dispatch(link, side, events)
            now = time.monotonic()
            for link in [link for link in self.links if not link.connected and link.deadline <= now]:
                link.close()

    def dispatch(self, link: Link, side: Side, events: int) -> None:
        try:
            if not link.connected:
                link.on_connect()
                return
            if events & selectors.EVENT_WRITE and not link.closed:
                link.on_writable(side)
            if events & selectors.EVENT_READ and not link.closed:
                link.on_readable(side)
        except OSError:
            link.close()  # a reset or broken connection on either side ends both


def _send(sock: socket.socket, data: bytes | memoryview) -> int:
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def start_companion(command: list[str]) -> int:
    """Start ``command`` and wait for its first line on stdout; its pidfd.
    Exits when it ends first or stays silent for ``COMPANION_TIMEOUT``."""
    read_end, write_end = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, write_end, 1), (os.POSIX_SPAWN_CLOSE, read_end)]
    pidfd = os.pidfd_open(os.posix_spawn(command[0], command, os.environ, file_actions=actions))
    os.close(write_end)
    with selectors.DefaultSelector() as waiting:
        waiting.register(read_end, selectors.EVENT_READ)
        said = os.read(read_end, 256) if waiting.select(COMPANION_TIMEOUT) else b""
    os.close(read_end)
    if not said.endswith(b"\n"):
        sys.exit("relay: the companion did not get ready")
    return pidfd


def _exit(signum: int, frame: object) -> None:
    sys.exit(0)


if __name__ == "__main__":
    args, companion = sys.argv[1:], []
    if "--" in args:
        args, companion = args[: args.index("--")], args[args.index("--") + 1 :]
    if len(args) != 3 or ("--" in sys.argv and not companion):
        sys.exit("usage: relay.py LISTEN_PORT TARGET_HOST TARGET_PORT [-- COMMAND...]")
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit)
    companion_fd = start_companion(companion) if companion else None
    # Resolved once: connecting never waits for a name lookup (the runtime passes an address).
    relay = Relay(int(args[0]), (socket.gethostbyname(args[1]), int(args[2])))
    if companion_fd is not None:
        relay.watch_companion(companion_fd)
    relay.run()

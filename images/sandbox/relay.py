"""convoy relay: the only way into a sandbox from outside its network.

A sandbox sits alone on its own internal network that has no address on the
host (``com.docker.network.bridge.inhibit_ipv4``): it can reach neither the
internet, nor the host, nor another sandbox. This relay is the one other
member of that network; it is also on a network the gateway reaches (a port
published on 127.0.0.1, or a shared network) and forwards every TCP connection
it accepts, byte for byte, to the agent at ``TARGET_HOST:TARGET_PORT``.

Usage: ``python3 -I -S relay.py LISTEN_PORT TARGET_HOST TARGET_PORT [-- COMMAND...]`` (the image
runs it compiled, ``relay.pyc``: see the Dockerfile).

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

One thread and an epoll loop over plain sockets, standard library only: it
runs once per conversation, so it imports only built-in modules (``_socket``,
``select``, ``posix``, ``_signal``): ``socket``, ``signal`` and ``selectors``
would bring ``enum`` and ``collections`` along, 1.2 MiB more of every
conversation's memory (asyncio more than doubles it).
"""

import errno
import posix
import select
import sys
import time

import _signal
import _socket

CHUNK = 256 * 1024
CONNECT_TIMEOUT = 5.0
BACKLOG = 512
COMPANION_TIMEOUT = 30.0
READ, WRITE = select.EPOLLIN, select.EPOLLOUT
_STREAM = (_socket.AF_INET, _socket.SOCK_STREAM)


class Side:
    """One socket of a relayed connection: what it still has to write, and its state."""

    __slots__ = ("sock", "pending", "read_done", "write_closed")

    def __init__(self, sock):
        self.sock = sock
        self.pending = memoryview(b"")  # read from the peer, not yet written here
        self.read_done = False  # EOF read from this socket
        self.write_closed = False  # the peer's EOF passed on (shutdown SHUT_WR)


class Link:
    """A client connection and its upstream connection to the target."""

    __slots__ = ("relay", "client", "upstream", "connected", "deadline", "closed")

    def __init__(self, relay, client, upstream):
        self.relay = relay
        self.client, self.upstream = Side(client), Side(upstream)
        self.connected = False
        self.deadline = time.monotonic() + CONNECT_TIMEOUT
        self.closed = False

    def peer(self, side):
        return self.upstream if side is self.client else self.client

    def on_connect(self):
        if self.upstream.sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR):
            self.close()  # the agent is not listening (yet): the caller sees the connection close
            return
        self.connected = True
        for side in (self.client, self.upstream):
            side.sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        self.update()

    def on_readable(self, side):
        peer = self.peer(side)
        try:
            data = side.sock.recv(CHUNK)
        except BlockingIOError:
            return
        if not data:
            side.read_done = True
        else:
            peer.pending = memoryview(data)[_send(peer.sock, data) :]
        self.flush(peer)

    def on_writable(self, side):
        side.pending = side.pending[_send(side.sock, side.pending) :]
        self.flush(side)

    def flush(self, side):
        """Pass the peer's EOF on once everything before it is written; close when both are done."""
        if not side.pending and self.peer(side).read_done and not side.write_closed:
            side.write_closed = True
            side.sock.shutdown(_socket.SHUT_WR)
        if self.client.write_closed and self.upstream.write_closed:
            self.close()
        else:
            self.update()

    def update(self):
        """Register what each socket waits for: reads only while its peer has nothing pending."""
        for side in (self.client, self.upstream):
            events = 0
            if side.pending:
                events |= WRITE
            if not side.read_done and not self.peer(side).pending:
                events |= READ
            self.relay.watch(side.sock.fileno(), events, (self, side))

    def close(self):
        if self.closed:
            return
        self.closed = True
        for side in (self.client, self.upstream):
            self.relay.watch(side.sock.fileno(), 0, None)
            side.sock.close()
        self.relay.links.discard(self)


class Relay:
    def __init__(self, listen_port, target):
        self.target = target
        self.poll = select.epoll()
        self.watched = {}  # fd -> (events, what): a (Link, Side), "accept" or "companion"
        self.links = set()
        self.listener = _socket.socket(*_STREAM)
        self.listener.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", listen_port))
        self.listener.listen(BACKLOG)
        self.listener.setblocking(False)
        self.watch(self.listener.fileno(), READ, "accept")

    def watch(self, fd, events, what):
        """Wait for ``events`` on ``fd`` (0: stop watching it)."""
        known = self.watched.get(fd)
        if not events:
            if known is not None:
                del self.watched[fd]
                self.poll.unregister(fd)
            return
        self.watched[fd] = (events, what)
        if known is None:
            self.poll.register(fd, events)
        elif known[0] != events:
            self.poll.modify(fd, events)

    def accept(self):
        for _ in range(BACKLOG):
            try:
                fd, _ = self.listener._accept()
            except BlockingIOError:
                return
            except OSError:
                time.sleep(0.05)  # out of descriptors or the like: let closing connections free some
                return
            self.open(_socket.socket(*_STREAM, 0, fd))

    def open(self, client):
        """Start connecting to the target for ``client``; :meth:`Link.on_connect` follows."""
        client.setblocking(False)
        upstream = _socket.socket(*_STREAM)
        upstream.setblocking(False)
        link = Link(self, client, upstream)
        self.links.add(link)
        if upstream.connect_ex(self.target) not in (0, errno.EINPROGRESS):
            link.close()
            return
        self.watch(upstream.fileno(), WRITE, (link, link.upstream))

    def run(self):
        while True:
            waiting = [link.deadline for link in self.links if not link.connected]
            timeout = max(0.0, min(waiting) - time.monotonic()) if waiting else -1
            for fd, events in self.poll.poll(timeout):
                known = self.watched.get(fd)
                if known is None:
                    continue  # closed by an earlier event of this round
                what = known[1]
                if what == "accept":
                    self.accept()
                elif what == "companion":
                    sys.exit("relay: the companion process ended")
                elif not what[0].closed:
                    self.dispatch(what[0], what[1], events)
            now = time.monotonic()
            for link in [link for link in self.links if not link.connected and link.deadline <= now]:
                link.close()

    def dispatch(self, link, side, events):
        try:
            if not link.connected:
                link.on_connect()
                return
            if events & (WRITE | select.EPOLLERR | select.EPOLLHUP) and side.pending and not link.closed:
                link.on_writable(side)
            if events & (READ | select.EPOLLERR | select.EPOLLHUP) and not link.closed:
                link.on_readable(side)
        except OSError:
            link.close()  # a reset or broken connection on either side ends both


def _send(sock, data):
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


def start_companion(command):
    """Start ``command`` and wait for its first line on stdout; its pidfd.
    Exits when it ends first or stays silent for ``COMPANION_TIMEOUT``."""
    read_end, write_end = posix.pipe()
    actions = [(posix.POSIX_SPAWN_DUP2, write_end, 1), (posix.POSIX_SPAWN_CLOSE, read_end)]
    pidfd = posix.pidfd_open(posix.posix_spawn(command[0], command, posix.environ, file_actions=actions))
    posix.close(write_end)
    said, deadline = b"", time.monotonic() + COMPANION_TIMEOUT
    # Until a whole line: an unbuffered companion writes a line's text and its end apart.
    while b"\n" not in said and (left := deadline - time.monotonic()) > 0:
        if not select.select([read_end], [], [], left)[0]:
            break
        chunk = posix.read(read_end, 256)
        if not chunk:
            break  # it ended (or closed its stdout) first
        said += chunk
    posix.close(read_end)
    if b"\n" not in said:
        sys.exit("relay: the companion did not get ready")
    return pidfd


def _address(host):
    """``host`` as an IPv4 address, resolved once: connecting never waits for a name lookup.
    The runtime passes an address: a lookup would load the C library's resolver modules
    (1.4 MiB of memory for the relay's life) for nothing."""
    try:
        _socket.inet_pton(_socket.AF_INET, host)
        return host
    except OSError:
        return _socket.gethostbyname(host)


def _exit(signum, frame):
    sys.exit(0)


if __name__ == "__main__":
    args, companion = sys.argv[1:], []
    if "--" in args:
        args, companion = args[: args.index("--")], args[args.index("--") + 1 :]
    if len(args) != 3 or ("--" in sys.argv and not companion):
        sys.exit("usage: relay.py LISTEN_PORT TARGET_HOST TARGET_PORT [-- COMMAND...]")
    for signum in (_signal.SIGTERM, _signal.SIGINT):
        _signal.signal(signum, _exit)
    companion_fd = start_companion(companion) if companion else None
    relay = Relay(int(args[0]), (_address(args[1]), int(args[2])))
    if companion_fd is not None:
        relay.watch(companion_fd, READ, "companion")
    relay.run()

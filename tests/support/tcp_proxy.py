"""A small threaded TCP proxy that a test puts between the app and its database and switches off
and on again, to play "the database went away" without touching the database server itself.

    proxy = TcpProxy(("127.0.0.1", 5432))
    proxy.start()                 # listens on 127.0.0.1:proxy.port and forwards every connection
    proxy.stop()                  # closes the listener and kills every open connection
    proxy.start()                 # listens again on the same port
    proxy.start(mode="blackhole") # accepts connections but never answers (a hung server)
    proxy.cut_after(b"COMMIT")    # forward the next client chunk holding b"COMMIT", then go down
                                  # before the server's answer reaches the client;
    proxy.cut_settled.wait(5)     # ... set once the server has acted on it and hung up

Killing a connection shuts both of its sockets down, so the client sees the connection close and
the server sees the client vanish (and rolls back an open transaction). Sockets are only ever
closed by the last of their two pump threads, under the link's lock, so no file descriptor is
used after it was closed (and possibly reused).
"""

from __future__ import annotations

import select
import socket
import threading

BUFFER_SIZE = 65536
POLL_SECONDS = 0.05
JOIN_SECONDS = 5.0


class _Link:
    """One client connection and, when forwarding, its upstream connection with two pumps."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket | None) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.pumps_running = 0
        self.closed = False
        self.cut = False  # after a cut, the server's answers are read and thrown away
        self.threads: list[threading.Thread] = []

    def start_pumps(self) -> None:
        assert self.upstream is not None
        self.pumps_running = 2
        self.threads = [
            threading.Thread(target=self._client_to_server, name="proxy-c2s", daemon=True),
            threading.Thread(target=self._server_to_client, name="proxy-s2c", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def kill(self) -> None:
        """Shut both sockets down (wakes the pumps, which then close them); idempotent."""
        with self.lock:
            if self.closed:
                return
            for sock in (self.client, self.upstream):
                _shutdown(sock, socket.SHUT_RDWR)
            if self.pumps_running == 0:  # a blackhole link has no pumps to close it
                self._close_locked()

    def cut_here(self) -> None:
        """The server keeps what it was sent (FIN after it); the client is disconnected. The
        link was marked `cut` before the armed chunk went out, so no answer got through."""
        with self.lock:
            if self.closed:
                return
            _shutdown(self.upstream, socket.SHUT_WR)
            _shutdown(self.client, socket.SHUT_RDWR)

    def join(self, timeout: float) -> None:
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(timeout)

    def _close_locked(self) -> None:
        self.closed = True
        for sock in (self.client, self.upstream):
            if sock is not None:
                sock.close()
        self.proxy._forget(self)
        if self.cut:
            self.proxy.cut_settled.set()

    def _pump_done(self) -> None:
        with self.lock:
            self.pumps_running -= 1
            if self.pumps_running == 0 and not self.closed:
                self._close_locked()

    def _client_to_server(self) -> None:
        try:
            while True:
                try:
                    data = self.client.recv(BUFFER_SIZE)
                except OSError:
                    break
                if not data:
                    break
                cut = self.proxy._take_cut(data)
                if cut:
                    with self.lock:
                        self.cut = True  # from here on, the server's answers are thrown away
                try:
                    self.upstream.sendall(data)
                except OSError:
                    break
                if cut:
                    self.proxy._go_down_after_cut(self)
                    return
            self.kill()
        finally:
            self._pump_done()

    def _server_to_client(self) -> None:
        try:
            while True:
                try:
                    data = self.upstream.recv(BUFFER_SIZE)
                except OSError:
                    break
                if not data:
                    break
                if self.cut:
                    continue  # the answer never reaches the client
                try:
                    self.client.sendall(data)
                except OSError:
                    if self.cut:
                        continue
                    break
            self.kill()
        finally:
            self._pump_done()


def _shutdown(sock: socket.socket | None, how: int) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass  # not connected any more


class TcpProxy:
    """Forward 127.0.0.1:`port` to `upstream` (host, port) until switched off; see the module doc."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1") -> None:
        self.upstream = upstream
        self.host = host
        self.port = 0  # chosen by the system at the first start(), then reused
        self.mode = "forward"
        self.connections_accepted = 0
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._stopping = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._cut_pattern: bytes | None = None
        self.cut_happened = threading.Event()
        # Set once the server closed the cut connection: it has acted on what it was sent.
        self.cut_settled = threading.Event()

    # -- switching ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._accept_thread is not None and not self._stopping.is_set()

    def start(self, mode: str = "forward") -> None:
        """Listen on `port` (the same one every time) and serve connections in `mode`:
        "forward" passes bytes both ways; "blackhole" accepts and never answers."""
        if mode not in {"forward", "blackhole"}:
            raise ValueError(f"unknown mode {mode!r}")
        self._join_accept_thread()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self.mode = mode
        self._stopping.clear()
        self.cut_happened.clear()
        self.cut_settled.clear()
        self._accept_thread = threading.Thread(target=self._accept_loop, args=(listener,), name="proxy-accept",
                                               daemon=True)
        self._accept_thread.start()

    def stop(self) -> None:
        """Stop listening (new connections are refused) and kill every open connection."""
        self._stopping.set()
        self._join_accept_thread()
        self.kill_connections()

    def kill_connections(self) -> None:
        """Kill every open connection (both sides see it close); keep listening if running."""
        with self._lock:
            links = list(self._links)
        for link in links:
            link.kill()
        for link in links:
            link.join(JOIN_SECONDS)

    def cut_after(self, pattern: bytes) -> None:
        """Arm a one-shot cut: the next client chunk containing `pattern` still reaches the
        server, then the proxy stops listening, the client's connection is closed before any
        answer gets back, and every other connection is killed."""
        with self._lock:
            self._cut_pattern = pattern
        self.cut_happened.clear()
        self.cut_settled.clear()

    def open_connections(self) -> int:
        with self._lock:
            return len(self._links)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------

    def _join_accept_thread(self) -> None:
        thread = self._accept_thread
        if thread is not None and thread is not threading.current_thread():
            self._stopping.set()
            thread.join(JOIN_SECONDS)
            assert not thread.is_alive(), "the proxy's accept thread did not stop"
            self._accept_thread = None

    def _accept_loop(self, listener: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                readable, _, _ = select.select([listener], [], [], POLL_SECONDS)
                if not readable or self._stopping.is_set():
                    continue
                try:
                    client, _ = listener.accept()
                except OSError:
                    continue
                self._serve(client)
        finally:
            listener.close()  # connections still in the backlog are reset

    def _serve(self, client: socket.socket) -> None:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections_accepted += 1
        if self.mode == "blackhole":
            with self._lock:
                self._links.add(_Link(self, client, None))
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=JOIN_SECONDS)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(self, client, upstream)
        with self._lock:
            self._links.add(link)
        link.start_pumps()

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)

    def _take_cut(self, data: bytes) -> bool:
        with self._lock:
            if self._cut_pattern is not None and self._cut_pattern in data:
                self._cut_pattern = None
                return True
            return False

    def _go_down_after_cut(self, link: _Link) -> None:
        """Called by `link`'s client-to-server pump right after forwarding the armed chunk.
        `cut_happened` is set before the client's socket closes, so a client that sees its
        connection drop also sees the flag."""
        self._stopping.set()  # the accept thread closes the listener within POLL_SECONDS
        with self._lock:
            others = [other for other in self._links if other is not link]
        for other in others:
            other.kill()
        self.cut_happened.set()
        link.cut_here()

"""uvicorn's HTTP protocol with ``TCP_NODELAY`` on every connection.

With ``--workers N`` uvicorn binds the listening socket itself (``socket.socket(family)``, protocol
number 0), and asyncio turns Nagle's algorithm off only for sockets whose protocol is
``IPPROTO_TCP``: every answer then waits for the client's delayed ACK, about 40 ms (measured with
bench/serve.py: two workers answered 700 req/s at a p50 of 44 ms, one worker 1,500 at 17 ms). With
one worker asyncio makes the socket itself and sets the option already.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class HttpToolsNoDelay(HttpToolsProtocol):
    """``httptools`` as uvicorn runs it, the connection's socket set to ``TCP_NODELAY`` first."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # the client has gone already: uvicorn sees it next
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)

"""Listening sockets: bound once in the supervisor, shared by (or cloned for) the workers."""

from __future__ import annotations

import socket

__all__ = ["LISTEN_BACKLOG", "default_bind_address", "open_listen_socket", "open_listen_sockets"]

# Connections the kernel queues per listening socket before the workers accept them.
LISTEN_BACKLOG = 4096


def open_listen_socket(address: str, port: int, reuseport: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # proto=IPPROTO_TCP matters: stdlib asyncio only sets TCP_NODELAY on accepted sockets
    # when it sees it; we also set NODELAY here, which Linux copies to accepted sockets.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_listen_sockets(
    address: str, port: int, count: int, reuseport: bool
) -> list[socket.socket]:
    """`count` SO_REUSEPORT sockets on one port (port 0 picks a free port once), or one."""
    first = open_listen_socket(address, port, reuseport)
    sockets = [first]
    try:
        port = first.getsockname()[1]
        for _ in range(count - 1 if reuseport else 0):
            sockets.append(open_listen_socket(address, port, reuseport))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def default_bind_address() -> str:
    """`[::]` dual-stack like agentgateway, or 0.0.0.0 where IPv6 is unavailable."""
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        return "0.0.0.0"
    try:
        probe.bind(("::", 0))
    except OSError:
        return "0.0.0.0"
    finally:
        probe.close()
    return "::"

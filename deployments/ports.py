"""Local TCP ports: picking free ones, and checking one before a server binds it."""

from __future__ import annotations

import socket

from objectos.errors import ConfigError


def _socket(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    # As the servers bind (uvicorn, Serve): a port in TIME_WAIT counts as free.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now (the kernel's choice)."""
    with _socket(host) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now."""
    with _socket(host) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(host: str, count: int) -> int:
    """The first of ``count`` consecutive free ports (one gateway per port)."""
    for _ in range(100):
        first = free_port(host)
        if first + count - 1 <= 65535 and all(port_free(host, first + i) for i in range(1, count)):
            return first
    raise ConfigError(f"no {count} consecutive free ports on {host}")


__all__ = ["free_port", "free_ports", "port_free"]

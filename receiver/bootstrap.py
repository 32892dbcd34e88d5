"""One bootstrap for every entry point (the app factory, the CLI, the serverless
handlers): settings and logging, built the same way; and how a failure a user can fix
becomes one line and an exit status instead of a traceback.

Exit statuses: 2 for a configuration problem (every problem listed, one per line), 1
for anything else the user can fix (port taken, store unreachable, permissions), 3 when
the app fails to start for another reason (logged), 130 on Ctrl-C.
"""

from __future__ import annotations

import errno
import socket
import sys
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import TextIO

from receiver.errors import ConfigError, RelayError
from receiver.logs import configure_logging
from receiver.settings import FULL_NEEDS, Settings, load_settings, load_store_settings
from receiver.store_check import StartupError

EXIT_CONFIG = 2
EXIT_FAILURE = 1


def bootstrap(
    environ: Mapping[str, str] | None = None,
    *,
    needs: Collection[str] = FULL_NEEDS,
    host: str | None = None,
    port: int | None = None,
) -> Settings:
    """Settings from the environment and ``relay.toml``, with logging configured
    (stderr: console on a terminal, JSON otherwise). Raises ``ConfigError``."""
    settings = load_settings(environ, needs=needs, host=host, port=port)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def bootstrap_store(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings for a command that only opens the store: ``DATABASE_URL`` alone (no
    secrets, no ``relay.toml`` and none of its ``${VAR}``s), with logging configured."""
    settings = load_store_settings(environ)
    configure_logging(settings.log_format, settings.log_level)
    return settings


def announce_generated(settings: Settings) -> None:
    """Dev mode (``RELAY_ENV=dev``) made secrets up: print them once, on stdout, never
    in the logs, so the token can be used."""
    for name, value in settings.generated.items():
        print(f"relay: RELAY_ENV=dev generated {name}={value} (this process only)", flush=True)


def error_line(exc: BaseException) -> tuple[str, int] | None:
    """What to print for ``exc`` and the exit status, when it is a failure the user can
    fix; None for a bug (which should surface)."""
    if isinstance(exc, ConfigError):
        if len(exc.problems) == 1:
            return f"invalid configuration: {exc.problems[0]}", EXIT_CONFIG
        return exc.message, EXIT_CONFIG
    if isinstance(exc, StartupError):
        return exc.message, EXIT_FAILURE
    if isinstance(exc, RelayError):
        return f"{exc.code}: {exc.message}", EXIT_FAILURE
    return None


@contextmanager
def exit_on_user_error(stream: TextIO | None = None) -> Iterator[None]:
    """Turn a failure the user can fix into ``relay: <one line>`` on stderr and
    ``SystemExit`` with its status (for entry points that are not the CLI's ``main``)."""
    try:
        yield
    except Exception as exc:
        found = error_line(exc)
        if found is None:
            raise
        print(f"relay: {found[0]}", file=stream or sys.stderr)
        raise SystemExit(found[1]) from None


def bind_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (to hand to uvicorn), or a ``StartupError``
    saying why not: port in use, privileged port, an address this machine lacks."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise StartupError(f"cannot listen on {host!r}: not a known host or address") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupError(_bind_failure(exc, host, port)) from None
    sock.set_inheritable(True)
    return sock


def _bind_failure(exc: OSError, host: str, port: int) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: port {port} is already in use (another relay? "
            "stop it, or pick another port with --port or PORT)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where}: permission denied (ports below 1024 need "
            "privileges; use --port 8000, say)"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: {host} is not an address of this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"

"""Fetching and refreshing the JWKS URLs of `jwtAuth`, off the request path.

agentgateway (crates/agentgateway/src/resource_manager.rs) fetches a JWKS URL when it loads
the config (a failed fetch fails the load), keeps the set for the response's
`Cache-Control: max-age` or `Expires`, else 15 minutes (never less than 60 s), and after a
failed refresh tries again in 15 s, keeping the last good set meanwhile. It does not
refetch for an unknown `kid`. Here the supervisor fetches every URL once before forking
(`load_remote_key_sets`); each worker then runs a `JwksRefresher` that refetches on that
schedule and swaps the new keys into the `KeySetHolder`s the jwtAuth steps read.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
import urllib.parse
from collections.abc import Sequence

import certifi
import h11

from agw_fast.errors import ConfigError
from agw_fast.log import logger
from agw_fast.policies.jwt import KeySetHolder, remote_key_sets

__all__ = ["JwksRefresher", "fetch_jwks", "load_remote_key_sets"]

DEFAULT_TTL = 15 * 60.0
MIN_TTL = 60.0
RETRY_AFTER_FAILURE = 15.0
FETCH_TIMEOUT = 10.0
MAX_DOCUMENT = 1 << 20  # a JWKS is a few KiB; more is a wrong URL

# When each URL is due for a refresh (time.monotonic(), shared by the processes of a host):
# set by the supervisor's first fetch, so a worker respawned later refreshes when due.
_DUE: dict[str, float] = {}
_TLS: ssl.SSLContext | None = None


def _tls() -> ssl.SSLContext:
    global _TLS
    if _TLS is None:
        _TLS = ssl.create_default_context(cafile=certifi.where())
    return _TLS


def _ttl(headers: Sequence[tuple[bytes, bytes]]) -> float:
    """Seconds to keep a fetched set: `max-age` (unless no-cache/no-store), `Expires`, or
    15 minutes; at least 60 s."""
    ttl: float | None = None
    expires: bytes | None = None
    for name, value in headers:
        if name == b"cache-control":
            directives = [d.strip().lower() for d in value.decode("latin-1").split(",")]
            if any(d in ("no-cache", "no-store") for d in directives):
                continue
            for d in directives:
                if d.startswith("max-age="):
                    try:
                        ttl = float(int(d[8:].strip('"')))
                    except ValueError:
                        pass
        elif name == b"expires":
            expires = value
    if ttl is None and expires is not None:
        try:
            when = email.utils.parsedate_to_datetime(expires.decode("latin-1")).timestamp()
        except (TypeError, ValueError):
            when = 0.0
        if when > time.time():
            ttl = when - time.time()
    return max(DEFAULT_TTL if ttl is None else ttl, MIN_TTL)


async def fetch_jwks(url: str, timeout: float = FETCH_TIMEOUT) -> tuple[str, float]:
    """GET `url` (HTTPS with certifi's roots); the body and how long to keep it."""
    async with asyncio.timeout(timeout):
        return await _get(url)


async def _get(url: str) -> tuple[str, float]:
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    reader, writer = await asyncio.open_connection(
        host, port, ssl=_tls() if https else None, server_hostname=host if https else None
    )
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)
        authority = parts.netloc.rpartition("@")[2]
        request = h11.Request(
            method="GET",
            target=target,
            headers=[("host", authority), ("accept", "application/json"),
                     ("user-agent", "agw-fast"), ("connection", "close")],
        )  # fmt: skip
        writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_DOCUMENT:
                    raise ValueError("response larger than 1 MiB")
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                break
    finally:
        writer.close()
    if not 200 <= status < 300:
        raise ValueError(f"status {status}")
    return body.decode("utf-8"), _ttl(headers)


def _apply(url: str, text: str, holders: Sequence[KeySetHolder]) -> None:
    for holder in holders:
        holder.update(text)


def _describe(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__


def load_remote_key_sets() -> None:
    """Fetch every JWKS URL of the compiled config once (in the supervisor, before forking).

    Raises ConfigError naming the URL if one cannot be fetched or holds no valid key set:
    agentgateway fails its config load then too.
    """
    remote = remote_key_sets()
    if not remote:
        return

    async def fetch_all() -> None:
        for url, holders in remote.items():
            try:
                text, ttl = await fetch_jwks(url)
                _apply(url, text, holders)
            except (OSError, ValueError, TimeoutError, h11.ProtocolError) as error:
                where = f"{holders[0].path}.jwks.url"
                reason = f"cannot load JWKS from {url}: {_describe(error)}"
                raise ConfigError(where, reason) from None
            _DUE[url] = time.monotonic() + ttl

    asyncio.run(fetch_all())


class JwksRefresher:
    """One task per JWKS URL in a worker, refetching on agentgateway's schedule."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.tasks = [
            loop.create_task(self._run(url, holders))
            for url, holders in remote_key_sets().items()
        ]

    async def _run(self, url: str, holders: Sequence[KeySetHolder]) -> None:
        # A holder a reloaded config added has no keys yet: fetch now.
        loaded = all(holder.keys is not None for holder in holders)
        due = _DUE.get(url, time.monotonic()) if loaded else time.monotonic()
        while True:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            try:
                text, ttl = await fetch_jwks(url)
                _apply(url, text, holders)
            except (OSError, ValueError, TimeoutError, h11.ProtocolError) as error:
                # The last good set stays in use.
                logger.warning("failed to refresh JWKS %s: %s", url, _describe(error))
                due = time.monotonic() + RETRY_AFTER_FAILURE
                continue
            due = time.monotonic() + ttl

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()

"""Keeping the Google access token of Vertex AI models fresh, off the request path.

agentgateway asks Google's auth library for an access token as it sends each Vertex request
(Application Default Credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's user
credentials, the metadata server; the library caches the token until shortly before it
expires). Here each worker runs one `GoogleTokenRefresher`: it finds the credentials, fetches
a token with `google-auth` (blocking calls, in a thread), installs it in the config's
`AccessToken` and fetches the next one a few minutes before that expires. The request path
only reads the installed header line; a request that finds none is answered 503.

A failed fetch is logged and retried (5 s, doubling to 60 s); the last token stays in use
until it expires.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agw_fast.llm.providers.vertex import AccessToken
from agw_fast.log import logger

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.auth.transport import Request

__all__ = ["GoogleTokenRefresher", "refresh_delay"]

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
FETCH_TIMEOUT = 5.0  # agentgateway's CLOUD_AUTH_TIMEOUT
RETRY_FIRST = 5.0
RETRY_MAX = 60.0
REFRESH_MARGIN = 300.0  # fetch the next token this long before the current one expires
DEFAULT_LIFETIME = 3600.0  # a credential that reports no expiry


def refresh_delay(lifetime: float) -> float:
    """Seconds until the next fetch for a token valid `lifetime` more seconds: five minutes
    before it expires, or halfway for a short-lived one; at least one second."""
    return max(1.0, lifetime - min(REFRESH_MARGIN, lifetime / 2))


def _http(url: str, method: str, body: bytes | None, headers: Mapping[str, str] | None,
          timeout: float | None) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    request = urllib.request.Request(url, data=body, headers=dict(headers or {}), method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout or FETCH_TIMEOUT) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:  # a status google-auth reads (and may retry)
        with error:
            return error.code, dict(error.headers.items()), error.read()


def _transport() -> Request:
    """google-auth's HTTP interface over urllib (no `requests` dependency)."""
    import google.auth.exceptions
    import google.auth.transport

    class Response(google.auth.transport.Response):
        def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
            self._status, self._headers, self._data = status, headers, data

        @property
        def status(self) -> int:
            return self._status

        @property
        def headers(self) -> dict[str, str]:
            return self._headers

        @property
        def data(self) -> bytes:
            return self._data

    class Request(google.auth.transport.Request):
        def __call__(
            self,
            url: str,
            method: str = "GET",
            body: bytes | None = None,
            headers: Mapping[str, str] | None = None,
            timeout: float | None = None,
            **kwargs: object,
        ) -> Response:
            try:
                return Response(*_http(url, method, body, headers, timeout))
            except (OSError, ValueError) as error:
                raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                    error
                ) from error

    return Request()


def _credentials(request: Request) -> Credentials:
    import google.auth

    credentials, _ = google.auth.default(scopes=SCOPES, request=request)
    return credentials


def _fetch(credentials: Credentials, request: Request) -> tuple[str, float]:
    """A fresh token and how many seconds it is valid (blocking)."""
    credentials.refresh(request)  # type: ignore[no-untyped-call]
    token = credentials.token
    if not isinstance(token, str) or not token:
        raise ValueError("the credentials returned no access token")
    expiry = credentials.expiry
    if expiry is None:
        return token, DEFAULT_LIFETIME
    if expiry.tzinfo is None:  # google-auth keeps naive UTC datetimes
        expiry = expiry.replace(tzinfo=datetime.UTC)
    return token, (expiry - datetime.datetime.now(datetime.UTC)).total_seconds()


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:300] + "..."


class GoogleTokenRefresher:
    """One task in a worker that keeps `token` current."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: AccessToken) -> None:
        self.token = token
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        request = _transport()
        credentials: Credentials | None = None
        retry = RETRY_FIRST
        while True:
            try:
                if credentials is None:
                    credentials = await asyncio.to_thread(_credentials, request)
                token, lifetime = await asyncio.to_thread(_fetch, credentials, request)
                self.token.set(token, time.monotonic() + lifetime)
            except Exception as error:  # google-auth's errors, transport and key errors
                self.token.expire(time.monotonic())
                logger.warning(
                    "vertex: cannot get a Google access token (Application Default "
                    "Credentials): %s; retrying in %gs",
                    _describe(error), retry,
                )
                await asyncio.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_FIRST
            logger.info("vertex: Google access token fetched, valid for %.0fs", lifetime)
            await asyncio.sleep(refresh_delay(lifetime))

    def close(self) -> None:
        self.task.cancel()

"""AWS Signature Version 4 for Bedrock requests, with botocore (the optional `bedrock` extra).

agentgateway signs every Bedrock request with the ambient AWS credentials (its `AwsAuth::
Implicit`: environment variables, shared config/credentials files, SSO, web identity, container
and instance roles), service `bedrock`, the model's region, over the URL as `https://`, the
body's SHA-256, and the `host`, `content-type` and `x-amz-*` fields (http/auth/aws.rs).

Here the credentials are resolved once, when the config is compiled (before the workers fork),
through botocore's chain; a request is then signed from a frozen copy, so the request path
never does I/O. Temporary credentials (assumed roles, SSO, instance profiles) are refreshed by
`refresh()`, which may block on the network and is called off the event loop (server/
aws_credentials.py runs it in a thread). The signature covers the body, so signing happens per
request once the body is built: `SigV4Signer.sign` returns the header lines to add.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from agw_fast.errors import ConfigError

if TYPE_CHECKING:
    from botocore.auth import SigV4Auth
    from botocore.credentials import Credentials

__all__ = ["INSTALL_HINT", "SERVICE", "SigV4Signer", "require_botocore", "signer_for", "signers"]

INSTALL_HINT = "pip install 'agw-fast[bedrock]'"
SERVICE = "bedrock"
_CONTENT_TYPE = "application/json"

_lock = threading.Lock()
_credentials: list[Credentials] = []  # this process's, resolved once
_signers: list[SigV4Signer] = []


def require_botocore(where: str) -> None:
    """Refuse a Bedrock model when botocore is not installed (a load-time error)."""
    try:
        import botocore.auth  # noqa: F401
    except ImportError:
        raise ConfigError(
            where, f"the bedrock provider signs requests with botocore: {INSTALL_HINT}"
        ) from None


def _resolve(where: str) -> Credentials:
    with _lock:
        if _credentials:
            return _credentials[0]
        import botocore.exceptions
        import botocore.session

        try:
            credentials = botocore.session.Session().get_credentials()
        except botocore.exceptions.BotoCoreError as error:
            raise ConfigError(where, f"cannot load AWS credentials: {error}") from None
        if credentials is None:
            raise ConfigError(
                where,
                "no AWS credentials found (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "AWS_PROFILE and ~/.aws/credentials, SSO, web identity or an instance role)",
            )
        _credentials.append(credentials)
        return credentials


class SigV4Signer:
    """Signs requests to one region's Bedrock endpoint."""

    __slots__ = ("region", "refreshable", "_credentials", "_auth")

    def __init__(self, region: str, credentials: Credentials) -> None:
        from botocore.credentials import RefreshableCredentials

        self.region = region
        self._credentials = credentials
        # Temporary credentials expire: the worker refreshes them in the background.
        self.refreshable = isinstance(credentials, RefreshableCredentials)
        self._auth = self._freeze()

    def _freeze(self) -> SigV4Auth:
        from botocore.auth import SigV4Auth

        # A frozen (read-only) copy: signing must never trigger botocore's own refresh, which
        # would block the event loop on the network.
        frozen = self._credentials.get_frozen_credentials()
        return SigV4Auth(frozen, SERVICE, self.region)

    def refresh(self) -> None:
        """Blocking: renew temporary credentials if botocore deems them near expiry (else
        this only re-reads them). Call it off the event loop."""
        self._auth = self._freeze()

    def sign(self, method: bytes, authority: bytes, target: bytes, body: bytes) -> bytes:
        """The header lines (`content-type`, `x-amz-date`, `x-amz-security-token`,
        `authorization`) for this request, each ending in CRLF. The head sent must carry
        `authority` as its Host and none of these fields from elsewhere."""
        from botocore.awsrequest import AWSRequest

        host = authority.decode("latin-1")
        request = AWSRequest(
            method=method.decode("latin-1"),
            url=f"https://{host}{target.decode('latin-1')}",
            data=body,
            headers={"host": host, "content-type": _CONTENT_TYPE},
        )
        self._auth.add_auth(request)
        headers = request.headers
        lines = [b"content-type: " + _CONTENT_TYPE.encode() + b"\r\n",
                 b"x-amz-date: " + headers["X-Amz-Date"].encode("latin-1") + b"\r\n"]  # fmt: skip
        token = headers.get("X-Amz-Security-Token")
        if token:
            lines.append(b"x-amz-security-token: " + token.encode("latin-1") + b"\r\n")
        lines.append(b"authorization: " + headers["Authorization"].encode("latin-1") + b"\r\n")
        return b"".join(lines)


def signer_for(region: str, where: str) -> SigV4Signer:
    """The signer for `region`, with this process's AWS credentials (resolved on first use;
    a ConfigError naming `where` when there are none)."""
    require_botocore(where)
    signer = SigV4Signer(region, _resolve(where))
    with _lock:
        _signers.append(signer)
    return signer


def signers() -> list[SigV4Signer]:
    """Every signer compiled in this process (for the worker's credential refresh)."""
    with _lock:
        return list(_signers)

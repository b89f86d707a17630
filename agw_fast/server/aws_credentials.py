"""Keeps temporary AWS credentials (assumed roles, SSO, instance profiles) fresh in a worker.

Bedrock requests are signed from a frozen copy of the credentials (llm/providers/aws_sigv4.py),
so the request path never waits on AWS. Here, every `REFRESH_INTERVAL` seconds, each signer
whose credentials can expire asks botocore for them again in a thread (botocore renews them
over the network once they are within its refresh window, else this costs nothing); a failure
keeps the last credentials, which botocore's own window leaves valid for several more minutes.
Static credentials (environment, shared files) start no task at all.
"""

from __future__ import annotations

import asyncio

from agw_fast.llm.providers.aws_sigv4 import SigV4Signer, signers
from agw_fast.log import logger

__all__ = ["REFRESH_INTERVAL", "AwsCredentialRefresher"]

REFRESH_INTERVAL = 60.0


class AwsCredentialRefresher:
    """One task per worker for all its refreshable signers (none: no task)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        refreshable = [signer for signer in signers() if signer.refreshable]
        self.task = loop.create_task(self._run(refreshable)) if refreshable else None

    async def _run(self, refreshable: list[SigV4Signer]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(REFRESH_INTERVAL)
            for signer in refreshable:
                try:
                    await loop.run_in_executor(None, signer.refresh)
                except Exception as error:  # botocore's many error types; keep the last ones
                    logger.warning(
                        "failed to refresh AWS credentials for region %s: %s",
                        signer.region, error,
                    )

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()

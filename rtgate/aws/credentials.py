"""Where a Bedrock deployment's AWS credentials and region come from.

Order (LiteLLM's parameter names, ``os.environ/`` already resolved by the loader):

1. ``aws_access_key_id`` + ``aws_secret_access_key`` (+ ``aws_session_token``) in
   ``litellm_params``: static, no I/O.
2. Otherwise botocore's default chain, with ``aws_profile_name`` as the profile:
   the ``AWS_*`` environment variables, the shared credentials/config files
   (including profiles that assume a role through STS), container and
   instance metadata. botocore does blocking I/O, so it runs in a worker
   thread, once per deployment; refreshable credentials are refreshed by
   botocore when they near expiry.

Credentials never reach a log: :class:`AwsCredentials` hides them in its repr.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import trio
from botocore.exceptions import BotoCoreError
from botocore.session import Session as _BotoSession

from rtgate.aws.sigv4 import AwsCredentials
from rtgate.config.model import Deployment
from rtgate.errors import UpstreamConnectError, scrub

_REGION_ENV = ("AWS_REGION", "AWS_DEFAULT_REGION")


def static_credentials(deployment: Deployment) -> AwsCredentials | None:
    """Credentials written in the deployment itself, or None to use the default chain."""
    access = deployment.param_str("aws_access_key_id")
    secret = deployment.param_str("aws_secret_access_key")
    if access and secret:
        return AwsCredentials(access, secret, deployment.param_str("aws_session_token") or None)
    return None


def configured_region(
    deployment: Deployment, environ: Mapping[str, str] | None = None
) -> str | None:
    """``aws_region_name``, else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; None if neither."""
    region = deployment.param_str("aws_region_name")
    if region:
        return region
    env = os.environ if environ is None else environ
    for name in _REGION_ENV:
        if env.get(name):
            return env[name]
    return None


class CredentialSource:
    """Credentials and region for one deployment, resolved lazily and cached."""

    def __init__(self, deployment: Deployment) -> None:
        self._static = static_credentials(deployment)
        self._profile = deployment.param_str("aws_profile_name")
        self._region = configured_region(deployment)
        self._session: _BotoSession | None = None
        self._boto_credentials: object | None = None
        self._lock = trio.Lock()

    async def region(self) -> str:
        if self._region is None:
            session = await self._botocore_session()
            try:
                region = await trio.to_thread.run_sync(session.get_config_variable, "region")
            except BotoCoreError as exc:
                raise UpstreamConnectError(f"AWS configuration: {scrub(str(exc))}", kind="auth")
            if not region:
                raise UpstreamConnectError(
                    "no AWS region: set aws_region_name or AWS_REGION", kind="auth"
                )
            self._region = str(region)
        return self._region

    async def get(self) -> AwsCredentials:
        """Current credentials; raises ``UpstreamConnectError(kind="auth")`` if there are none."""
        if self._static is not None:
            return self._static
        async with self._lock:
            try:
                if self._boto_credentials is None:
                    session = await self._botocore_session()
                    self._boto_credentials = await trio.to_thread.run_sync(session.get_credentials)
                if self._boto_credentials is None:
                    raise UpstreamConnectError("no AWS credentials found", kind="auth")
                frozen = await trio.to_thread.run_sync(
                    self._boto_credentials.get_frozen_credentials  # type: ignore[attr-defined]
                )
            except BotoCoreError as exc:
                # botocore's messages name profiles and files, never secret values.
                raise UpstreamConnectError(f"AWS credentials: {scrub(str(exc))}", kind="auth")
        return AwsCredentials(frozen.access_key, frozen.secret_key, frozen.token or None)

    async def _botocore_session(self) -> _BotoSession:
        if self._session is None:
            profile = self._profile
            self._session = await trio.to_thread.run_sync(lambda: _BotoSession(profile=profile))
        return self._session

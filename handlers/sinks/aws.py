"""What the AWS sinks (``s3``, ``sqs``) share: credential keys and checks, and the
aiobotocore client configuration (imported lazily: the driver is optional)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig

CREDENTIAL_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def credentials_of(options: Mapping[str, Any]) -> dict[str, str]:
    """The credential keys set in ``options`` (absent ones leave the standard AWS chain)."""
    return {key: str(options[key]) for key in CREDENTIAL_KEYS if options.get(key)}


def credential_pair_problems(options: Mapping[str, Any]) -> list[str]:
    """An access key id without its secret (or the reverse) is a problem."""
    if bool(options.get("aws_access_key_id")) != bool(options.get("aws_secret_access_key")):
        return ["'aws_access_key_id' and 'aws_secret_access_key' go together"]
    return []


def client_config(timeout_s: float, **extra: Any) -> AioConfig:
    """The sinks' client settings: the sink's timeout, two tries in standard mode."""
    from aiobotocore.config import AioConfig

    return AioConfig(
        connect_timeout=timeout_s,
        read_timeout=timeout_s,
        retries={"mode": "standard", "total_max_attempts": 2},
        **extra,
    )

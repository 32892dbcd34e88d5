"""moto's S3 API on 127.0.0.1, plus a plain aiobotocore client to look inside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from moto.server import ThreadedMotoServer

# moto accepts any credentials; these are passed explicitly, never via os.environ.
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
REGION = "us-east-1"


@contextmanager
def moto_server() -> Iterator[str]:
    """Run moto on a free loopback port; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@asynccontextmanager
async def s3_client(endpoint_url: str) -> AsyncIterator[Any]:
    """An aiobotocore S3 client for the test's own reads and writes."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3", region_name=REGION, endpoint_url=endpoint_url, **CREDENTIALS
    ) as client:
        yield client

"""Fixtures for the sink tests: moto's S3 API (once per session) and an image host."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.helpers.image_server import ImageServer
from tests.helpers.s3_server import moto_server
from tests.helpers.servers import serve_app


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 API on 127.0.0.1 (buckets persist for the session: use unique names)."""
    with moto_server() as url:
        yield url


@pytest.fixture
async def image_host() -> AsyncIterator[tuple[ImageServer, str]]:
    """The image host and its base URL."""
    images = ImageServer()
    async with serve_app(images.app()) as url:
        yield images, url

"""Fixtures for the sink tests: an image host (moto's S3 API is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.helpers.image_server import ImageServer
from tests.helpers.servers import serve_app


@pytest.fixture
async def image_host() -> AsyncIterator[tuple[ImageServer, str]]:
    """The image host and its base URL."""
    images = ImageServer()
    async with serve_app(images.app()) as url:
        yield images, url

"""A tiny image host: real PNG bytes, one of them larger than an S3 multipart part.

``/images/small.png``  a 16x16 PNG (``simulators.base.png_bytes``)
``/images/big.png``    a valid ~9.7 MB PNG (random pixels, stored uncompressed), streamed
``/images/noext``      the small PNG under a URL without an extension
``/raw/picture.webp``  bytes labelled ``application/octet-stream``
``/images/broken.png`` sends 9 MiB of the big PNG, then drops the connection
``/status/{code}``     answers with that status
``/redirect?to=URL``   302 to URL
anything else          404
"""

from __future__ import annotations

import functools
import random
import struct
import zlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from simulators.base import png_bytes

BIG_SIDE = 1800  # 1800 x 1800 RGB, stored: about 9.7 MB (> 8 MiB)
CHUNK = 256 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


@functools.cache
def small_png() -> bytes:
    return png_bytes("small-image")


@functools.cache
def big_png() -> bytes:
    """A valid PNG whose IDAT is stored (level 0), so its size is the pixel count."""
    rng = random.Random(20261123)
    row = 1 + BIG_SIDE * 3
    raw = bytearray(rng.randbytes(row * BIG_SIDE))
    raw[::row] = bytes(BIG_SIDE)  # filter byte 0 at the start of every row
    header = struct.pack(">IIBBBBB", BIG_SIDE, BIG_SIDE, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 0))
        + _chunk(b"IEND", b"")
    )


class ImageServer:
    """Counts the GETs it served per path (``hits``)."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}

    async def _stream(self, data: bytes, stop_after: int | None = None) -> AsyncIterator[bytes]:
        end = len(data) if stop_after is None else stop_after
        for start in range(0, end, CHUNK):
            yield data[start : min(start + CHUNK, end)]
        if stop_after is not None:
            raise ConnectionAbortedError("the image host went away mid-body")

    async def _get(self, request: Request) -> Response:
        path = request.url.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if path in ("/images/small.png", "/images/noext"):
            return Response(small_png(), media_type="image/png")
        if path == "/images/big.png":
            return StreamingResponse(self._stream(big_png()), media_type="image/png")
        if path == "/images/broken.png":
            stream = self._stream(big_png(), stop_after=9 * 1024 * 1024)
            return StreamingResponse(stream, media_type="image/png")
        if path == "/raw/picture.webp":
            return Response(small_png(), media_type="application/octet-stream")
        if path == "/redirect":
            target = request.query_params.get("to", "/images/small.png")
            return Response(status_code=302, headers={"location": target})
        if path.startswith("/status/"):
            code = int(request.path_params["path"].removeprefix("status/"))
            return PlainTextResponse(f"status {code}", status_code=code)
        return PlainTextResponse("not found", status_code=404)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self._get, methods=["GET"])])

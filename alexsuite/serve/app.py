"""The HTTP API and the web page. JSON in the shapes of the commands' --json lines; errors as
{"error": ...} with a 4xx status, never a stack trace; images are served by id, never by a
path a request names."""

from __future__ import annotations

import asyncio
import functools
import hmac
import io
import logging
import os
from dataclasses import fields
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..data.decode import decode_bytes
from ..data.inputs import ImageInput
from ..errors import AlexsuiteError, DataError
from ..fileio import open_regular
from ..retrieval.rerank import Rerank, parse_rerank
from ..version import __version__
from .live import Reranked
from .settings import ServeSettings, is_loopback

log = logging.getLogger("alexsuite.serve")
THUMB = 192  # px, the page's grid tiles
MAX_ID = 2**63 - 1  # SQLite's integer range


def create_app(service, settings: ServeSettings) -> FastAPI:
    """`service`: a Service (server.py) holding the model, live index, batcher and detector."""
    app = FastAPI(title="alexsuite", version=__version__, description="fc7 image search and R-CNN detection.")
    app.add_middleware(Guard, settings=settings)
    _errors(app)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("alexsuite.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        if name not in ("app.js", "style.css"):  # a fixed list: no path from the request reaches the disk
            raise HTTPException(404, "no such file")
        text = resources.files("alexsuite.serve").joinpath(f"static/{name}").read_text(encoding="utf-8")
        return Response(text, media_type="text/javascript" if name.endswith(".js") else "text/css")

    @app.get("/health")
    def health() -> JSONResponse:
        state = service.health()
        return JSONResponse(state, status_code=200 if state["status"] == "ok" else 503)

    @app.get("/stats")
    def stats() -> dict:
        return service.stats()

    @app.post("/search")
    async def search_upload(
        file: UploadFile = File(...),
        k: int | None = Query(None, ge=1),
        params: str | None = None,
        rerank: str | None = None,
    ) -> dict:
        asked = _rerank(rerank, settings)  # a bad rerank fails before the upload is decoded
        image = await _upload(file, settings)
        return await service.search(_with_rerank(image, asked), _k(k, settings), params)

    @app.get("/search")
    async def search_id(
        id: int = Query(..., ge=0, le=MAX_ID),
        k: int | None = Query(None, ge=1),
        params: str | None = None,
        rerank: str | None = None,
    ):
        asked = _rerank(rerank, settings)
        image = await asyncio.get_running_loop().run_in_executor(None, service.indexed, id)  # waits on the lock
        return await service.search(_with_rerank(image, asked), _k(k, settings), params)

    @app.get("/duplicates")
    def duplicates(threshold: float | None = Query(None, ge=0, le=2), limit: int = Query(100, ge=1, le=10_000)) -> dict:
        """Groups of copies and near-copies in the index (as `alexsuite dedup --index`)."""
        return service.duplicates(threshold, limit)

    @app.post("/detect")
    async def detect(file: UploadFile = File(...), threshold: float | None = None, mode: str | None = None) -> dict:
        if service.detector is None:
            raise HTTPException(404, "no detector: start the server with --detector DIR")
        image = await _upload(file, settings)
        call = functools.partial(service.detect, image, threshold, mode)
        return await asyncio.get_running_loop().run_in_executor(None, call)

    @app.get("/images/{id}")
    def image(id: int = FastApiPath(..., ge=0, le=MAX_ID)) -> Response:
        row = service.row(id)
        path = Path(row.path)
        try:
            with open_regular(path) as f:
                st = os.fstat(f.fileno())
                if (st.st_size, st.st_mtime_ns) != (row.size, row.mtime_ns):  # replaced since (a link?)
                    raise HTTPException(404, f"image {id}: its file changed since it was indexed")
                data = f.read()
        except OSError:
            raise HTTPException(404, f"image {id}: its file is gone") from None
        return Response(data, media_type=_media_type(path))

    @app.get("/thumbs/{id}")
    def thumb(id: int = FastApiPath(..., ge=0, le=MAX_ID)) -> Response:
        return Response(service.thumbnail(id, THUMB), media_type="image/jpeg")

    return app


def _k(k: int | None, settings: ServeSettings) -> int:
    k = k or settings.k
    if k > settings.max_k:
        raise HTTPException(400, f"k={k}: at most {settings.max_k}")
    return k


def _rerank(text: str | None, settings: ServeSettings) -> Rerank:
    """A request's `rerank` (as `alexsuite search --rerank`), its n within the server's max_k."""
    asked = parse_rerank(text)
    if asked.on and asked.n > settings.max_k:
        raise HTTPException(400, f"rerank n={asked.n}: at most {settings.max_k}")
    return asked


def _with_rerank(image: ImageInput, rerank: Rerank) -> ImageInput:
    return Reranked(**{f.name: getattr(image, f.name) for f in fields(image)}, rerank=rerank) if rerank.on else image


async def _upload(file: UploadFile, settings: ServeSettings) -> ImageInput:
    data = await file.read()
    name = Path(file.filename or "upload").name or "upload"  # a name only, for messages: never opened
    call = functools.partial(decode_bytes, data, name, settings.max_pixels)
    pixels = await asyncio.get_running_loop().run_in_executor(None, call)
    return ImageInput(name, pixels=pixels)


def _media_type(path: Path) -> str:
    kinds = {".jpg": "jpeg", ".jpeg": "jpeg", ".png": "png", ".gif": "gif", ".webp": "webp", ".bmp": "bmp"}
    kind = kinds.get(path.suffix.lower())
    return f"image/{kind}" if kind else "application/octet-stream"


def thumbnail_bytes(path: str, size: int) -> bytes:
    """The result sheets' tile (viz.thumbnail: letterboxed, small images enlarged crisply) as a JPEG."""
    from .. import viz

    out = io.BytesIO()
    viz.thumbnail(path, size).save(out, format="JPEG", quality=85)
    return out.getvalue()


class Guard:
    """ASGI middleware: the bearer token (when set) on every request, and the upload limit,
    counted as the body arrives (a chunked upload cannot lie about its length), before any
    parsing; the body is then handed on whole."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings, self.limit = app, settings, settings.max_upload_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.settings.token and not _authorised(headers, scope.get("query_string", b""), self.settings.token):
            return await _error(401, "missing or wrong token: send Authorization: Bearer TOKEN")(scope, receive, send)
        if not self.settings.token and is_loopback(self.settings.host) and not _local_host(headers.get("host", "")):
            # a web page whose name was rebound to 127.0.0.1 must not read a token-less server
            return await _error(403, "this server answers only requests to localhost")(scope, receive, send)
        too_big = _error(413, f"upload over {self.settings.max_upload_mb:g} MB (--max-upload-mb)")
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_big(scope, receive, send)
        handed = False

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _local_host(host: str) -> bool:
    """A Host header naming this machine's loopback (with any port): localhost, 127.x, [::1]."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    return name == "" or is_loopback(name)


def _authorised(headers: dict, query: bytes, token: str) -> bool:
    from urllib.parse import parse_qs

    given = headers.get("authorization", "")
    if given.lower().startswith("bearer "):
        given = given[7:]
    else:  # the page's <img> tags cannot send a header
        given = (parse_qs(query.decode("latin-1")).get("token") or [""])[0]
    return hmac.compare_digest(given.encode(), token.encode())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(AlexsuiteError)
    async def user_error(request, exc: AlexsuiteError):
        return _error(getattr(exc, "http_status", 400), str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def bug(request, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return _error(500, "internal error (the server's log has the details)")


class UnknownImage(DataError):
    """An id with no indexed image."""

    http_status = 404


class Busy(AlexsuiteError):
    """The batcher did not answer in time."""

    http_status = 503


__all__ = ["Busy", "UnknownImage", "create_app", "thumbnail_bytes"]

"""The HTTP API and the web page over one open catalog (FastAPI; `create_app` builds it).

    POST   /search             multipart `image`, or JSON {"id": ...} (more like this); parameters
                               top_k, same_category, category_key, filter, exclude_ids, boost, views,
                               weights, candidates in the query string or the JSON body
    GET    /items/{id}         the item's record          GET /items/{id}/image   its picture (PNG)
    POST   /items              multipart: `image` files with a `record` (JSON) each, in order (202
                               with the ids when it outlasts the time limit: it goes on)
    DELETE /items/{id}         remove it
    POST   /duplicates         JSON {threshold, max_per_item, views, weights}: near-duplicate groups
    GET    /categories         the catalog's category values (for the page's filter)
    GET    /health, /metrics   liveness and the catalog's size; Prometheus text
    GET    /                   the page (static/index.html, static/app.js)

Search answers are predict.py's JSON lines, one object: the query's record plus `results`. Errors
are JSON {"error": message, "status": code}. The models are loaded once, at start-up; the work
of a request runs on a thread pool with a time limit, so the event loop keeps answering.
"""

import asyncio
import concurrent.futures
import json
import logging
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any

from simfusion.io.images import ImageError
from simfusion.io.records import RecordError, record_id, record_json
from simfusion.search.duplicates import DEFAULT_THRESHOLD, MAX_PER_ITEM
from simfusion.search.faiss_index import single_query_threads
from simfusion.search.vectors import UnknownViewError
from simfusion.serve.limits import MAX_UPLOAD_BYTES, BodyLimit, bearer_or_header, key_problem
from simfusion.serve.metrics import Metrics, MetricsMiddleware
from simfusion.serve.params import search_options
from simfusion.serve.service import Service, Upload

log = logging.getLogger(__name__)

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
REQUEST_TIMEOUT = 60.0  # seconds a request's work may take before it is answered with 504
READ_TIMEOUT = 60.0  # seconds a client may take to send its request body (408 after)
MAX_FILES = 64  # images in one POST /items
DUPLICATES_PARAMETERS = ("max_per_item", "threshold", "views", "weights")  # POST /duplicates takes these only


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None):
    from fastapi.responses import Response

    body = record_json(value).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def strict_json(data: str | bytes) -> Any:
    """JSON as the standard has it: NaN and Infinity (which Python's json reads) are refused, since
    an answer that carried them back would not be JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(data, parse_constant=refuse)


def error_response(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any):
    return json_response({"error": message, "status": status, **extra}, status, headers)


def is_multipart(request) -> bool:
    """Whether the request's body is multipart/form-data (media types are case-blind)."""
    return request.headers.get("content-type", "").strip().lower().startswith("multipart/form-data")


class Context:
    """What every route shares: the service, the thread pools, the limits, the key."""

    def __init__(
        self, service: Service, *, api_key: str | None, threads: int, request_timeout: float
    ) -> None:
        self.service, self.api_key, self.request_timeout = service, api_key, request_timeout
        # each search thread sets FAISS's OpenMP threads for itself (OpenMP's setting is per thread;
        # the BLAS limit it also sets is process-wide)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="search", initializer=single_query_threads
        )
        self.writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
        self.state: dict[str, Any] = {"image_search": None}

    async def run(self, fn: Callable[[], Any], *, executor=None, timeout: float | None = None) -> Any:
        loop = asyncio.get_running_loop()
        timeout = self.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(loop.run_in_executor(executor or self.pool, fn), timeout)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the request took longer than {timeout:g} s") from None

    async def read_form(self, request):
        try:
            return await asyncio.wait_for(request.form(max_files=MAX_FILES, max_fields=256), READ_TIMEOUT)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {READ_TIMEOUT:g} s") from None

    async def read_json(self, request) -> dict[str, Any]:
        try:
            body = await asyncio.wait_for(request.body(), READ_TIMEOUT)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {READ_TIMEOUT:g} s") from None
        try:
            value = strict_json(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ApiError(400, "the JSON body must be an object")
        return value

    def check_key(self, request) -> None:
        problem = key_problem(self.api_key, bearer_or_header(request.headers))
        if problem:
            raise ApiError(*problem)

    def options_of(self, params, *, also: tuple[str, ...] = ()) -> dict[str, Any]:
        try:
            return search_options(params, self.service.views(), also=also)
        except (ValueError, UnknownViewError) as exc:
            raise ApiError(422, str(exc)) from None

    def shutdown(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.writer.shutdown(wait=False, cancel_futures=True)


def create_app(
    service: Service,
    *,
    api_key: str | None = None,
    threads: int = 4,
    request_timeout: float = REQUEST_TIMEOUT,
    max_upload: int = MAX_UPLOAD_BYTES,
    warm: bool = True,
):
    """The FastAPI app serving `service`; `api_key` guards the write endpoints when given."""
    from fastapi import FastAPI

    ctx = Context(service, api_key=api_key, threads=threads, request_timeout=request_timeout)

    @asynccontextmanager
    async def lifespan(app):
        if warm:
            loop = asyncio.get_running_loop()
            ctx.state["image_search"] = await loop.run_in_executor(ctx.pool, service.warm)
        yield
        ctx.shutdown()

    app = FastAPI(title="simfusion", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    metrics = Metrics(service.size)
    app.state.service, app.state.metrics = service, metrics
    _error_routes(app)
    _search_routes(app, ctx)
    _item_routes(app, ctx)
    _catalog_routes(app, ctx, metrics)
    _static_routes(app)
    app.add_middleware(BodyLimit, limit=max_upload)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: counts the 413s too
    return app


def _error_routes(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return error_response(exc.status, exc.message, **exc.extra)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        # e.g. a 405's Allow header, which says which methods the path takes
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return error_response(422, "; ".join(str(e.get("msg")) for e in exc.errors()))

    @app.exception_handler(Exception)
    async def crash(request, exc: Exception):
        log.exception("serve: %s %s failed", request.method, request.url.path)
        # the exception's text can name server paths: it goes to the log only
        return error_response(500, f"internal error ({type(exc).__name__}); the server log has the details")


def _search_routes(app, ctx: Context) -> None:
    from fastapi import Request

    @app.post("/search")
    async def search(request: Request):
        if is_multipart(request):
            form = await ctx.read_form(request)
            if len(form.getlist("image")) > 1:
                raise ApiError(400, "send one query image a search (POST /items adds many)")
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "send the query image as the multipart file field `image`")
            data = await upload.read()
            if not data:
                raise ApiError(400, "the uploaded image is empty")
            params = _merged(request.query_params, [(k, v) for k, v in form.multi_items() if k != "image"])
            options = ctx.options_of(params)
            record = {"upload": os.path.basename(upload.filename or "") or "image"}
            try:
                answer = await ctx.run(lambda: ctx.service.search_upload(data, record, options))
            except ImageError as exc:
                raise ApiError(415, f"not a readable image: {exc}") from None
            except ValueError as exc:  # e.g. a view that cannot be computed from a new image
                raise ApiError(422, str(exc)) from None
            return json_response(answer)
        body = await ctx.read_json(request)
        try:  # the id rule every record follows (records.record_id); no id at all is refused too
            key = record_id({"id": body.get("id")})
        except RecordError:
            wanted = 'send an image (multipart field `image`) or JSON {"id": "<catalog id>"}'
            raise ApiError(400, wanted) from None
        options = ctx.options_of(_merged(request.query_params, body), also=("id",))
        try:
            return json_response(await ctx.run(lambda: ctx.service.search_id(str(key), options)))
        except KeyError:
            raise ApiError(404, f"no item {key!r} in the catalog") from None


def _item_routes(app, ctx: Context) -> None:
    from fastapi import Request

    @app.get("/items/{item_id:path}/image")
    async def item_image(item_id: str):
        from fastapi.responses import Response

        data = await ctx.run(lambda: ctx.service.picture(item_id))
        if data is None:
            found = await ctx.run(lambda: ctx.service.record(item_id))
            if found is None:  # an id that itself ends in "/image": its record
                whole = await ctx.run(lambda: ctx.service.record(f"{item_id}/image"))
                if whole is not None:
                    return json_response(whole)
            raise ApiError(404, f"no item {item_id!r} in the catalog" if found is None else "no picture")
        return Response(data, media_type="image/png", headers={"cache-control": "max-age=300"})

    @app.get("/items/{item_id:path}")
    async def item(item_id: str):
        record = await ctx.run(lambda: ctx.service.record(item_id))
        if record is None:
            raise ApiError(404, f"no item {item_id!r} in the catalog")
        return json_response(record)

    @app.post("/items")
    async def add_items(request: Request):
        ctx.check_key(request)
        if not is_multipart(request):
            raise ApiError(415, "send multipart/form-data: `image` files, each with a `record` JSON field")
        form = await ctx.read_form(request)
        uploads = await _uploads(form)
        try:
            out = await ctx.run(lambda: ctx.service.add(uploads), executor=ctx.writer)
        except ApiError as exc:
            if exc.status != 504:
                raise
            # the write is not stopped half-way (that would lose it): it goes on, and says so
            return json_response(_still_adding(uploads, ctx.request_timeout), 202)
        added = sum(bool(record.get("indexed")) for record in out)
        status = 200 if added else 422
        return json_response({"added": added, "items": ctx.service.size(), "records": out}, status)

    @app.delete("/items/{item_id:path}")
    async def remove_item(request: Request, item_id: str):
        ctx.check_key(request)
        summary = await ctx.run(lambda: ctx.service.remove([item_id]), executor=ctx.writer)
        if not summary["removed"]:
            raise ApiError(404, f"no item {item_id!r} in the catalog")
        return json_response(summary)


def _catalog_routes(app, ctx: Context, metrics: Metrics) -> None:
    from fastapi import Request

    @app.post("/duplicates")
    async def duplicates(request: Request):
        body = await ctx.read_json(request)
        threshold, most = body.get("threshold", DEFAULT_THRESHOLD), body.get("max_per_item", MAX_PER_ITEM)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not -1 <= threshold <= 1:
            raise ApiError(422, f"threshold must be a number from -1 to 1 (a cosine), not {threshold!r}")
        if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= MAX_PER_ITEM:
            # the answer grows with the catalog times max_per_item: duplicates.py has no cap
            raise ApiError(422, f"max_per_item must be a whole number from 1 to {MAX_PER_ITEM}, not {most!r}")
        unknown = sorted(set(body) - set(DUPLICATES_PARAMETERS))
        if unknown:
            known = ", ".join(DUPLICATES_PARAMETERS)
            raise ApiError(422, f"unknown parameter(s) {', '.join(unknown)}: use {known}")
        options = ctx.options_of(body, also=("threshold", "max_per_item"))
        views, weights = options["views"], options["weights"]

        def find():
            return ctx.service.duplicates(
                threshold=threshold, max_per_item=most, views=views, weights=weights
            )

        try:
            groups = await ctx.run(find, timeout=max(ctx.request_timeout, 600.0))
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return json_response({"threshold": threshold, "duplicates": groups})

    @app.get("/categories")
    async def categories(key: str = "category"):
        try:
            found = await ctx.run(lambda: ctx.service.categories(key))
        except ValueError as exc:  # a field that names server files
            raise ApiError(422, str(exc)) from None
        return json_response({"key": key, "values": found})

    @app.get("/health")
    async def health():
        return json_response(
            {
                "status": "ok",
                "items": ctx.service.size(),
                "views": ctx.service.views(),
                "image_search": ctx.state["image_search"] is None,
                **({"image_search_error": ctx.state["image_search"]} if ctx.state["image_search"] else {}),
            }
        )

    @app.get("/metrics")
    async def prometheus():
        from fastapi.responses import Response

        body, kind = metrics.text()
        return Response(body, media_type=kind)


def _static_routes(app) -> None:
    from fastapi.responses import FileResponse

    @app.get("/")
    async def page():
        return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

    @app.get("/app.js")
    async def script():
        return FileResponse(os.path.join(STATIC, "app.js"), media_type="text/javascript")


def _merged(query, extra: dict[str, Any] | list[tuple[str, Any]]) -> dict[str, Any]:
    """Query-string parameters, then those of a JSON body or a form, which win, as {name: value(s)}."""
    out: dict[str, Any] = {}
    for key, value in query.multi_items():
        out.setdefault(key, []).append(value)
    if isinstance(extra, dict):
        out.update(extra)
        return out
    grouped: dict[str, list[Any]] = {}
    for key, value in extra:
        grouped.setdefault(key, []).append(value)
    out.update(grouped)
    return out


async def _uploads(form) -> list[Upload]:
    """The `image` files of an add request, each with its `record` JSON (row-aligned)."""
    files = [value for key, value in form.multi_items() if key == "image" and not isinstance(value, str)]
    texts = [value for key, value in form.multi_items() if key == "record"]
    if not files:
        raise ApiError(400, "send at least one multipart file field `image`")
    if len(texts) != len(files):
        raise ApiError(400, f"send one `record` field per image: {len(files)} images, {len(texts)} records")
    uploads = []
    for upload, text in zip(files, texts, strict=True):
        try:
            record = strict_json(text if isinstance(text, str) else await text.read())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"a `record` field is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise ApiError(400, "each `record` field must be a JSON object with an `id`")
        uploads.append(Upload(record=record, data=await upload.read()))
    return uploads


def _still_adding(uploads: list[Upload], timeout: float) -> dict[str, Any]:
    """The 202 answer of an add that outlasted the request's time limit and goes on."""
    ids = []
    for upload in uploads:
        try:
            ids.append(record_id(upload.record))
        except ValueError:
            pass
    return {
        "accepted": True,
        "ids": ids,
        "message": f"the add takes longer than {timeout:g} s and goes on: GET /items/{{id}} answers "
        "each item once it is in (a retry now would find the ids already in the catalog)",
    }

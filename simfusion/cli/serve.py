"""Serve a trained catalog over HTTP: the search API and a web page (FastAPI + uvicorn).

    serve.py --model_save_path DIR [--host 127.0.0.1] [--port 8000] [--api_key KEY] [--threads 4]

The model folder is opened once and its models loaded before the first request (warm). Write
endpoints (POST /items, DELETE /items/{id}) need the API key when one is set, by --api_key or the
SIMFUSION_API_KEY environment variable. See simfusion/serve/app.py for the endpoints.
"""

from __future__ import annotations

import logging
import os

from simfusion.cli.common import HelpFormatter, add_log_level_argument, configure_logging, positive_int
from simfusion.io.store import StoreFormatError
from simfusion.search.index import IndexFileError
from simfusion.serve.limits import API_KEY_ENV, MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)

STAGE = "serve"


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="serve.py",
        description='Serve a trained catalog: POST /search (an image upload, or {"id": ...}), '
        "GET/POST/DELETE /items, POST /duplicates, GET /health, GET /metrics, and a web page at /.",
    )
    parser.add_argument(
        "--model_save_path", required=True, help="folder of the trained models, features.h5, index/"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port)")
    parser.add_argument(
        "--api_key",
        default=os.environ.get(API_KEY_ENV),
        help=f"key the write endpoints need (X-API-Key header); default: ${API_KEY_ENV}; none: open",
    )
    parser.add_argument("--threads", type=positive_int, default=4, help="requests worked on at once")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds a request may take before it gets 504"
    )
    parser.add_argument(
        "--max_upload_mb", type=positive_int, default=MAX_UPLOAD_BYTES // 2**20, help="upload cap (413 above)"
    )
    parser.add_argument("--detector", help="object detector for queries (default: the one training used)")
    parser.add_argument("--edges", choices=("hed", "canny"), help="edge method of the edges view")
    parser.add_argument("--no_warm", action="store_true", help="load the models on the first query instead")
    add_log_level_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535, not {args.port}")
    if not args.timeout > 0:
        parser.error(f"--timeout must be > 0, not {args.timeout}")
    configure_logging(args.log_level)
    import uvicorn

    from simfusion.search.catalog import Catalog
    from simfusion.search.faiss_index import single_query_threads
    from simfusion.serve.app import create_app
    from simfusion.serve.service import Service

    try:
        single_query_threads()
        catalog = Catalog.open(args.model_save_path, detector=args.detector, edges=args.edges)
    except (FileNotFoundError, StoreFormatError, IndexFileError) as exc:
        log.error("%s: %s", STAGE, exc)
        return 1
    app = create_app(
        Service(catalog),
        api_key=args.api_key or None,
        threads=args.threads,
        request_timeout=args.timeout,
        max_upload=args.max_upload_mb * 2**20,
        warm=not args.no_warm,
    )
    if not args.api_key:
        log.warning("%s: no API key: anyone who can reach the port may add and remove items", STAGE)
    log.info("%s: %d items, views %s", STAGE, len(catalog), ", ".join(catalog.views))
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level.lower(),
        log_config=stderr_log_config(),
        timeout_keep_alive=5,
    )
    return 0


def stderr_log_config() -> dict:
    """uvicorn's logging, its access log on stderr too (uvicorn writes it to stdout, which is data)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config["handlers"].values():
        if handler.get("stream") == "ext://sys.stdout":
            handler["stream"] = "ext://sys.stderr"
    return config

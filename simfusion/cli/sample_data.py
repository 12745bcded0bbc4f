"""make_sample_data.py: build the shipped sample catalog."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
from collections import Counter

from simfusion.cli.common import add_log_level_argument, configure_logging, positive_int
from simfusion.data.fashion_mnist import load_fashion_mnist
from simfusion.data.sample import (
    JPEG_QUALITY,
    QUERY_CLASS,
    attribution_text,
    fashion_record,
    select_fashion,
    upscale,
    write_broken,
    write_fashion,
    write_jsonl,
    write_photos,
)
from simfusion.io.atomic import write_bytes
from simfusion.io.images import save_image

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="local_test_data", help="folder to write the sample data into")
    parser.add_argument("--per_class", type=positive_int, default=30, help="Fashion-MNIST images per class")
    parser.add_argument(
        "--size", type=positive_int, default=112, help="side of the upscaled Fashion-MNIST images"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the selection and the fake prices")
    parser.add_argument("--fashion_mnist", help="folder of the Fashion-MNIST idx files (default: Debian's)")
    add_log_level_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    output = args.output
    try:
        images, labels = load_fashion_mnist("test", root=args.fashion_mnist)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 1
    try:
        chosen, query = select_fashion(labels, per_class=args.per_class, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))

    os.makedirs(output, exist_ok=True)
    photos = write_photos(output)
    fashion = write_fashion(output, images, labels, chosen, size=args.size, seed=args.seed)
    broken = write_broken(output, cut_from=(photos or fashion)[0]["image"])
    catalog = photos + fashion + broken
    write_jsonl(os.path.join(output, "catalog.jsonl"), catalog)

    query_record = fashion_record(query, int(labels[query]), seed=args.seed)
    query_record.update(id=f"query-{QUERY_CLASS}", image="query.jpg")
    for key in ("price", "currency", "price_note"):
        query_record.pop(key)
    save_image(
        os.path.join(output, "query.jpg"), upscale(images[query], size=args.size), quality=JPEG_QUALITY
    )
    write_jsonl(os.path.join(output, "query.jsonl"), [query_record])

    command = shlex.join(
        ["python", "make_sample_data.py", "--output", output, "--per_class", str(args.per_class)]
        + ["--size", str(args.size), "--seed", str(args.seed)]
    )
    text = attribution_text(photos, len(fashion), command=command)
    write_bytes(os.path.join(output, "ATTRIBUTION.md"), text.encode("utf-8"))

    counts = Counter(record["category"] for record in catalog)
    log.info(
        "wrote %d records to %s (%d photos, %d fashion, %d broken): %s",
        len(catalog),
        output,
        len(photos),
        len(fashion),
        len(broken),
        ", ".join(f"{name} {count}" for name, count in sorted(counts.items())),
    )
    return 0

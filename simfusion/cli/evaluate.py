"""evaluate.py: P@k, R@k and mAP@k of every view, the fusion and baselines."""

from __future__ import annotations

import logging

from simfusion.cli.common import HelpFormatter, add_log_level_argument, configure_logging, non_negative_int
from simfusion.evaluate.protocol import BASELINES, evaluate_store
from simfusion.evaluate.report import format_table, plot_results
from simfusion.io.atomic import write_json
from simfusion.search.graph import REORDERS
from simfusion.search.vectors import FUSIONS

log = logging.getLogger(__name__)


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="evaluate.py",
        description="Precision@k, recall@k and mAP@k of every view, the fused ranking and baselines on a "
        "labelled catalog trained by train.py. Queries are left out of their own results.",
    )
    parser.add_argument(
        "--model_save_path", required=True, help="folder of the trained models and features.h5"
    )
    parser.add_argument("--category_key", default="category", help="record field that says what is relevant")
    parser.add_argument("--k", default="10,100", help="comma-separated cut-offs (default 10,100)")
    parser.add_argument(
        "--queries", type=non_negative_int, default=1000, help="queries drawn from the catalog (0: all)"
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the query draw")
    parser.add_argument("--views", help="comma-separated views (default: every view of the store)")
    parser.add_argument("--weights", help="per-view weights of the fusion, e.g. thumbnail=1,edges=0.5")
    parser.add_argument(
        "--fusion",
        choices=FUSIONS,
        default="early",
        help="how the views' scores are fused (simfusion/search/index.py)",
    )
    parser.add_argument(
        "--pooling",
        default="avgmax",
        choices=("avgmax", "avg", "max", "gem", "flatten"),
        help="how a trained view's feature maps become a vector",
    )
    parser.add_argument("--whiten", action="store_true", help="PCA-whiten each view, fitted on the catalog")
    parser.add_argument("--baselines", default=",".join(BASELINES), help="baselines to add ('' for none)")
    parser.add_argument("--base_image_path", default=".", help="folder relative thumbnail paths start from")
    parser.add_argument(
        "--rerank",
        choices=REORDERS,
        default="none",
        help="diffusion: also a row of the tuned (else plain) fusion re-ranked as predict.py --rerank does",
    )
    parser.add_argument("--json", help="also write the results as JSON here")
    parser.add_argument("--plot", help="also draw the results as a bar chart (PNG) here")
    add_log_level_argument(parser)
    return parser


def main(argv: list[str] | None = None) -> int:

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        parser.error(f"--k takes whole numbers separated by commas, not {args.k!r}")
    if not ks or min(ks) < 1:
        parser.error("--k needs at least one cut-off >= 1")
    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    unknown = sorted(set(baselines) - set(BASELINES))
    if unknown:
        parser.error(f"unknown baseline(s) {', '.join(unknown)}: choose from {', '.join(BASELINES)}")
    configure_logging(args.log_level)
    views = [v.strip() for v in args.views.split(",")] if args.views else None
    try:
        report = evaluate_store(
            args.model_save_path,
            category_key=args.category_key,
            ks=ks,
            n_queries=args.queries or None,
            seed=args.seed,
            views=views,
            weights=args.weights,
            fusion=args.fusion,
            pooling=args.pooling,
            whiten=args.whiten,
            baselines=baselines,
            base_path=args.base_image_path,
            rerank=args.rerank,
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        log.error("evaluate: %s", exc)
        return 1
    print(f"{report['queries']} queries over {report['items']} items, relevant = same {args.category_key!r}")
    print(format_table(report["results"]))
    try:
        if args.json:
            write_json(args.json, report, indent=2)  # atomically, its folder made
        if args.plot:
            title = f"{report['items']} items, {report['queries']} queries"
            plot_results(report["results"], args.plot, title=title)
    except OSError as exc:  # the table is out on stdout already
        log.error("evaluate: cannot write the results: %s", exc)
        return 1
    return 0

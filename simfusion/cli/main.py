"""`simfusion COMMAND [ARGS]`: every stage and tool behind one console script, for pip users.

The top-level scripts (object_detection.py, thumbnail.py, ...) stay; each subcommand runs the
same `main` with the same flags, so `simfusion detect --help` and `python object_detection.py
--help` print the same thing.
"""

from __future__ import annotations

import importlib
import sys

from simfusion.cli.common import run_script

# subcommand -> (module whose main runs it, the top-level script it equals, what it does)
COMMANDS = {
    "detect": ("simfusion.cli.detect", "object_detection.py", "find the main object of each image"),
    "thumbnail": ("simfusion.cli.thumbnail", "thumbnail.py", "crop, pad and resize to thumbnails"),
    "views": ("simfusion.cli.views", "saliency.py", "saliency, edge and foreground views"),
    "train": ("simfusion.cli.train", "train.py", "train the views' encoders; write features.h5"),
    "index": ("simfusion.cli.index", "fusion.py", "build the fused index; --add / --remove items"),
    "predict": ("simfusion.cli.predict", "predict.py", "the catalog items most similar to query images"),
    "evaluate": ("simfusion.cli.evaluate", "evaluate.py", "P@k, R@k, mAP@k of views, fusion, baselines"),
    "serve": ("simfusion.cli.serve", "serve.py", "the search API and web page over HTTP"),
    "duplicates": ("simfusion.cli.duplicates", "duplicates.py", "near-duplicate groups of the catalog"),
    "sample-data": ("simfusion.cli.sample_data", "make_sample_data.py", "rebuild the sample catalog"),
}


def usage() -> str:
    lines = ["usage: simfusion COMMAND [ARGS ...]", "", "commands:"]
    width = max(map(len, COMMANDS))
    for name, (_, script, summary) in COMMANDS.items():
        lines.append(f"  {name:<{width}}  {summary} (= {script})")
    lines += ["", "`simfusion COMMAND --help` shows a command's flags."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nsimfusion: error: unknown command {name!r}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return run_script(lambda: module.main(rest))

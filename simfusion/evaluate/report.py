"""How an evaluation is shown: a markdown table and a bar chart."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A markdown table: one row per method, one column per metric."""
    metrics = list(next(iter(results.values())))
    lines = ["| method | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for method, values in results.items():
        lines.append(f"| {method} | " + " | ".join(f"{values[m]:.4f}" for m in metrics) + " |")
    return "\n".join(lines)


def plot_results(results: Mapping[str, Mapping[str, float]], path: str, *, title: str = "") -> str:
    """A grouped bar chart of every metric per method, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(results)
    metrics = list(next(iter(results.values())))
    width = 0.8 / len(metrics)
    figure, axes = plt.subplots(figsize=(max(6.0, 1.1 * len(methods) + 2), 4.2))
    for i, metric in enumerate(metrics):
        positions = np.arange(len(methods)) + (i - (len(metrics) - 1) / 2) * width
        axes.bar(positions, [results[m][metric] for m in methods], width, label=metric)
    axes.set_xticks(np.arange(len(methods)), methods, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("score")
    axes.set_title(title)
    axes.legend(fontsize="small", ncols=min(len(metrics), 3))
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

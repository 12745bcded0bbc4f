"""Choosing a FAISS index: the kind and its parameters for a catalog, from its size, or from a
memory budget and a latency target as autofaiss does (`choose_index`, with an estimated recall@10),
and the settings that cannot work for it, refused before any work (`IndexPlanError`)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from simfusion.search.faiss_index import (
    DIRECT_MAP_BYTES,
    EF_SEARCH,
    HNSW_M,
    ID_BYTES,
    SCAN_BYTES_PER_MS,
    choose_kind,
    default_nprobe,
    ivf_nlist,
    pq_m,
    pq_nlist,
)

log = logging.getLogger(__name__)

_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """'4G', '512M', '1.5G', '1000000' -> bytes (binary units; a trailing B or iB is allowed)."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?)(?:I?B)?\s*", str(text).upper())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"a memory size is a positive number with an optional K, M, G or T, not {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_bytes(size: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}T"


@dataclass(frozen=True)
class IndexChoice:
    """A kind with its parameters, and what it is expected to cost and find."""

    kind: str
    params: dict[str, int] = field(default_factory=dict)
    memory_bytes: int = 0
    latency_ms: float = 0.0
    recall: float = 1.0  # estimated recall@10 against exact search

    def describe(self) -> str:
        params = ", ".join(f"{key}={value}" for key, value in self.params.items())
        return (
            f"{self.kind}({params}): ~{format_bytes(self.memory_bytes)}, ~{self.latency_ms:.1f} ms/query, "
            f"estimated recall@10 {self.recall:.2f}"
        )


# Prior recall@10 of a PQ kind by code bytes per dimension: rough and data-dependent, from
# tests/search/test_faiss_index.py (32-d: 0.87 at 1/2, 0.70 at 1/4) and benchmarks/bench_search.py
# (hard 128-d synthetic vectors: 0.07-0.18 at 1/8). The recall measured after building is logged too.
PQ_RECALL = ((1.0, 0.95), (0.5, 0.85), (0.25, 0.65), (0.125, 0.2), (0.0625, 0.1), (0.0, 0.05))
OPQ_GAIN = 0.04


def _pq_recall(code_bytes: int, dim: int, opq: bool) -> float:
    ratio = code_bytes / dim
    prior = next(recall for floor, recall in PQ_RECALL if ratio >= floor)
    return min(0.99, prior + (OPQ_GAIN if opq else 0.0))


def _candidates(n: int, dim: int) -> list[IndexChoice]:
    """Every kind worth considering for `n` items of `dim` dimensions, best recall first."""
    nlist, coarse = ivf_nlist(n), pq_nlist(n)
    probe_share = default_nprobe(nlist) / nlist
    extra = ID_BYTES + DIRECT_MAP_BYTES
    out = [
        IndexChoice("exact", {}, n * (4 * dim + ID_BYTES), n * 4 * dim / SCAN_BYTES_PER_MS, 1.0),
        IndexChoice(
            "hnsw",
            {"hnsw_m": HNSW_M},
            n * (4 * dim + 2 * HNSW_M * 4 + ID_BYTES),
            (EF_SEARCH * HNSW_M * 4 * dim) / SCAN_BYTES_PER_MS,
            0.95,
        ),
        IndexChoice(
            "ivf",
            {"nlist": nlist},
            n * (4 * dim + extra) + nlist * 4 * dim,
            (n * probe_share * 4 * dim + nlist * 4 * dim) / SCAN_BYTES_PER_MS,
            0.9,
        ),
    ]
    for wanted in (dim, dim // 2, dim // 4, dim // 8, dim // 16, dim // 32):
        m = pq_m(dim, max(1, wanted))
        if any(choice.params.get("pq_m") == m for choice in out):
            continue
        tables = 256 * 4 * dim + coarse * 4 * dim  # PQ centroids and coarse centroids
        share = default_nprobe(coarse) / coarse
        latency = (n * share * m + coarse * 4 * dim + share * coarse * 256 * m * 4) / SCAN_BYTES_PER_MS
        for kind in ("opq", "ivfpq"):
            rotation = 4 * dim * dim if kind == "opq" else 0
            out.append(
                IndexChoice(
                    kind,
                    {"nlist": coarse, "pq_m": m},
                    n * (m + extra) + tables + rotation,
                    latency,
                    _pq_recall(m, dim, kind == "opq"),
                )
            )
    return out


def choose_index(n: int, dim: int, *, max_memory: int, target_latency_ms: float | None = None) -> IndexChoice:
    """The best-recall kind for `n` vectors of `dim` dimensions that fits `max_memory` bytes (and
    answers a query within `target_latency_ms`, estimated); the smallest one when none fits."""
    options = _candidates(n, dim)
    fitting = [
        choice
        for choice in options
        if choice.memory_bytes <= max_memory
        and (target_latency_ms is None or choice.latency_ms <= target_latency_ms)
    ]
    if fitting:
        choice = max(fitting, key=lambda c: (c.recall, -c.memory_bytes))
    else:
        choice = min(options, key=lambda c: c.memory_bytes)
        log.warning(
            "no index kind fits %s for %d x %d vectors; taking the smallest",
            format_bytes(max_memory),
            n,
            dim,
        )
    log.info("index for %d x %d vectors within %s: %s", n, dim, format_bytes(max_memory), choice.describe())
    return choice


class IndexPlanError(ValueError):
    """Index settings that cannot work for this catalog (found before any work)."""


OPQ_MIN_ITEMS = 256  # the rotation's own product quantiser has 256 centroids a part


def plan_index(
    kind: str,
    n: int,
    dim: int,
    nlist: int | None,
    nprobe: int | None,
    pq_m: int | None,
    max_memory: int | None,
    target_latency_ms: float | None,
) -> dict[str, Any]:
    """The kind and its parameters for `n` vectors of `dim` dimensions: as given, from the memory
    budget (and latency target) through `choose_index`, or by catalog size (`choose_kind`)."""
    plan: dict[str, Any] = {}
    if kind == "auto" and max_memory:
        choice = choose_index(n, dim, max_memory=max_memory, target_latency_ms=target_latency_ms)
        kind, nlist, pq_m = (
            choice.kind,
            nlist or choice.params.get("nlist"),
            pq_m or choice.params.get("pq_m"),
        )
        plan["estimated_recall"] = choice.recall
        plan["estimated_memory"] = choice.memory_bytes
    elif kind == "auto":
        kind = choose_kind(n)
    if kind in ("ivf", "ivfpq", "opq"):
        nlist = nlist or (ivf_nlist(n) if kind == "ivf" else pq_nlist(n))
        nprobe = nprobe or default_nprobe(nlist)
        if nlist > n:
            raise IndexPlanError(f"{nlist} IVF lists for {n} items: give --nlist {n} or fewer")
    if kind == "opq" and n < OPQ_MIN_ITEMS:  # FAISS fails only after training for minutes
        raise IndexPlanError(
            f"an OPQ index trains on at least {OPQ_MIN_ITEMS} items, and the catalog has {n}: "
            "use --index ivfpq or exact"
        )
    return {"kind": kind, "nlist": nlist, "nprobe": nprobe, "pq_m": pq_m, **plan}

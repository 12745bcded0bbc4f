"""How one search runs (`SearchOptions`, whose defaults are the product's) and what a query record
sheds before it is answered again."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from simfusion.search.crops import CROPS
from simfusion.search.graph import REORDERS
from simfusion.search.rules import Rules

CANDIDATE_FACTOR = 10  # candidates searched per result shown, before the rules thin them out


@dataclass(frozen=True)
class SearchOptions:
    """How one search runs; the defaults are the product's."""

    k: int = 10
    rules: Rules | None = None
    views: Sequence[str] | None = None
    weights: Mapping[str, float] | None = None
    candidates: int = CANDIDATE_FACTOR
    nprobe: int | None = None
    ef_search: int | None = None
    crops: str = "guided"  # simfusion.search.crops: "guided" for queries the detector is unsure of
    rerank: str = "none"  # simfusion.search.graph: "diffusion" reorders the hits over the catalog's graph

    def __post_init__(self) -> None:
        if self.crops not in CROPS:
            raise ValueError(f"crops must be one of {', '.join(CROPS)}, not {self.crops!r}")
        if self.rerank not in REORDERS:
            raise ValueError(f"rerank must be one of {', '.join(REORDERS)}, not {self.rerank!r}")


def fresh_query(record: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a query record without the `query_box` and `query_crop` of an earlier answer
    (outputs: the guided crop sets them again when it applies)."""
    return {key: value for key, value in record.items() if key not in ("query_box", "query_crop")}

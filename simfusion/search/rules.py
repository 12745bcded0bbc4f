"""Business rules over ranked hits: same category, field filters, excluded ids, score boosts.

Pure functions over lists of hits ({id, score, scores, ...the catalog record's fields}); the
caller searches more candidates than it shows, applies the rules, then keeps the top k.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from simfusion.io.records import field_text

log = logging.getLogger(__name__)

Hit = dict[str, Any]
CATEGORY_KEY = "category"
LABEL_KEY = "label"  # the label object_detection.py gave the record's main object (a COCO class)
AGNOSTIC_LABELS = ("object",)  # what class-agnostic detectors call everything: no category


@dataclass(frozen=True)
class Boost:
    """Multiply the score of hits whose `key` field equals `value` by `factor`."""

    key: str
    value: str
    factor: float


@dataclass
class Rules:
    """The rules one query is ranked under; the empty Rules() changes nothing."""

    filters: dict[str, str] = field(default_factory=dict)
    exclude_ids: set[str] = field(default_factory=set)
    boosts: list[Boost] = field(default_factory=list)
    same_category: bool = False
    category_key: str = CATEGORY_KEY

    def __bool__(self) -> bool:
        return bool(self.filters or self.exclude_ids or self.boosts or self.same_category)


def parse_filters(items: Iterable[str]) -> dict[str, str]:
    """`key=value` strings -> {key: value}; several filters must all match."""
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a filter is key=value, not {item!r}")
        filters[key.strip()] = value.strip()
    return filters


MAX_BOOST = 1e6  # larger (or inf) would overflow a hit's score


def parse_boosts(items: Iterable[str]) -> list[Boost]:
    """`key=value:factor` strings -> Boosts; factor > 1 promotes, between 0 and 1 demotes."""
    boosts = []
    for item in items:
        condition, sep, number = item.rpartition(":")
        key, eq, value = condition.partition("=")
        if not sep or not eq or not key.strip():
            raise ValueError(f"a boost is key=value:factor, not {item!r}")
        try:
            factor = float(number)
        except ValueError:
            raise ValueError(f"the factor of boost {item!r} is not a number") from None
        if not 0 < factor <= MAX_BOOST:
            raise ValueError(f"the factor of boost {item!r} must be > 0 and <= {MAX_BOOST:g}")
        boosts.append(Boost(key.strip(), value.strip(), factor))
    return boosts


def parse_ids(text: str | None) -> set[str]:
    """`a,b,c` -> {"a", "b", "c"}."""
    return {part.strip() for part in (text or "").split(",") if part.strip()}


def matches(record: Mapping[str, Any], filters: Mapping[str, str]) -> bool:
    """True when every `key=value` filter equals the record's field exactly."""
    return all(field_text(record.get(key)) == value for key, value in filters.items())


def record_category(record: Mapping[str, Any], key: str = CATEGORY_KEY) -> str | None:
    """A record's category for `same_category`: its `key` field; without one, the label its detector
    gave its main object (`car`, `cup`, ...; not the class-agnostic `object`); else None."""
    category = field_text(record.get(key))
    if category not in (None, ""):
        return category
    label = record.get(LABEL_KEY)
    return label if isinstance(label, str) and label and label not in AGNOSTIC_LABELS else None


def boosted(score: float, factor: float) -> float:
    # a factor above 1 must promote even a negative (dissimilar) score, so it divides those
    return score * factor if score >= 0 else score / factor


def infer_category(hits: Sequence[Hit], *, key: str = CATEGORY_KEY, top: int = 10) -> str | None:
    """The category of a query without one: a vote of its `top` neighbours weighted by score.

    Scores are shifted to be positive (the worst of the voters counts a little), so cosine and
    rrf scores both work; ties go to the category of the better-ranked neighbour.
    """
    voters = [hit for hit in hits[:top] if record_category(hit, key) is not None]
    if not voters:
        return None
    low = min(float(hit["score"]) for hit in voters)
    spread = max(float(hit["score"]) for hit in voters) - low
    votes: dict[str, float] = {}
    for hit in voters:
        name = record_category(hit, key)
        votes[name] = votes.get(name, 0.0) + (float(hit["score"]) - low) + 0.1 * spread + 1e-9
    return max(votes, key=votes.__getitem__)  # dicts keep insertion (rank) order, max keeps the first


def apply_rules(hits: Sequence[Hit], rules: Rules, *, category: str | None = None) -> list[Hit]:
    """Keep the hits the rules allow, boost their scores, re-rank best first.

    `category` is the query's category for `same_category` (None keeps no hit, as nothing can
    be said to match). Boosted hits keep their original score as `raw_score`.
    """
    out, boosted_any = [], False
    for hit in hits:
        if str(hit.get("id")) in rules.exclude_ids:
            continue
        if not matches(hit, rules.filters):
            continue
        if rules.same_category and (category is None or record_category(hit, rules.category_key) != category):
            continue
        factor = 1.0
        for boost in rules.boosts:
            if field_text(hit.get(boost.key)) == boost.value:
                factor *= boost.factor
        if factor != 1.0:
            hit = {**hit, "raw_score": hit["score"], "score": round(boosted(float(hit["score"]), factor), 6)}
            boosted_any = True
        out.append(hit)
    if not boosted_any:
        return out  # the hits' own order (the fused score's, or a re-ranking's) stands
    return sorted(out, key=lambda hit: -float(hit["score"]))  # stable: ties keep their ranking


def with_fields(
    hits: Sequence[dict[str, Any]], records: Mapping[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Hits with their catalog record's fields after {id, score, scores} (those keys win)."""
    out = []
    for hit in hits:
        full = dict(hit)
        for key, value in records.get(hit["id"], {}).items():
            full.setdefault(key, value)
        out.append(full)
    return out


def ruled(
    hits: list[dict[str, Any]], query: Mapping[str, Any], rules: Rules, *, k: int, query_number: int = 0
) -> tuple[list[dict[str, Any]], str | None]:
    """One query's hits under the rules, cut to `k`, and the category inferred for it (or None)."""
    if not rules:
        return hits[:k], None
    category, inferred = None, None
    if rules.same_category:
        category = record_category(query, rules.category_key)
        if category in (None, ""):
            category = inferred = infer_category(hits, key=rules.category_key, top=k)
    if rules.same_category and category in (None, ""):
        # nothing to match: better the unfiltered ranking than no results at all
        log.warning(
            "query %d has no category and its neighbours none to infer; same_category ignored for it",
            query_number,
        )
        rules = replace(rules, same_category=False)
    kept = apply_rules(hits, rules, category=category) if rules else hits
    return kept[:k], inferred

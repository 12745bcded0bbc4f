"""A search request's parameters -> the Catalog's search options, checked like predict.py's flags.

Parameters come from the query string (`?top_k=5&filter=brand=acme&filter=colour=red`) or from a
JSON body ({"id": ..., "top_k": 5, "filter": {"brand": "acme"}}); both shapes give the same
options. Anything wrong is a ValueError whose message names the parameter (the app answers 422).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from simfusion.search.options import CANDIDATE_FACTOR, SearchOptions
from simfusion.search.rules import CATEGORY_KEY, Rules, parse_boosts, parse_filters, parse_ids
from simfusion.search.vectors import check_views, parse_weights
from simfusion.serve.service import HIDDEN_KEYS

MAX_TOP_K = 1000
DEFAULT_TOP_K = 10
# every parameter a search takes; anything else (a typo such as `topk`) is refused, not ignored
PARAMETERS = (
    "top_k", "filter", "exclude_ids", "boost", "same_category", "category_key", "views", "weights",
    "candidates", "crops", "rerank",
)  # fmt: skip
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def values(params: Mapping[str, Any], name: str) -> list[Any]:
    """Every value given for `name`: a repeated query parameter, a JSON list, or one value."""
    getlist = getattr(params, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = params.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def one(params: Mapping[str, Any], name: str) -> Any:
    found = values(params, name)
    if len(found) > 1:
        raise ValueError(f"{name}: give it once, not {len(found)} times")
    return found[0] if found else None


def whole_number(params: Mapping[str, Any], name: str, default: int, *, top: int) -> int:
    value = one(params, name)
    if value is None or value == "":
        return default
    try:
        whole = not isinstance(value, bool) and not (isinstance(value, float) and not value.is_integer())
        number = int(value) if whole else None
    except (TypeError, ValueError, OverflowError):
        number = None
    if number is None or not 1 <= number <= top:
        raise ValueError(f"{name} must be a whole number from 1 to {top}, not {value!r}")
    return number


def flag(params: Mapping[str, Any], name: str) -> bool:
    value = one(params, name)
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text in TRUE | FALSE:
        return text in TRUE
    raise ValueError(f"{name} must be true or false, not {value!r}")


def texts(params: Mapping[str, Any], name: str) -> list[str]:
    """A list parameter: repeated, a JSON list, or (for filter and boost) a JSON object."""
    out = []
    for value in values(params, name):
        if isinstance(value, Mapping):
            out.extend(f"{key}={item}" for key, item in value.items())
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            out.append(str(value))
        else:
            raise ValueError(f"{name}: expected text, not {value!r}")
    return out


def joined(params: Mapping[str, Any], name: str) -> str | None:
    """A comma-separated parameter; a JSON list or object is joined the same way."""
    parts = []
    for value in values(params, name):
        if isinstance(value, Mapping):
            parts.extend(f"{key}={item}" for key, item in value.items())
        else:
            parts.append(str(value))
    return ",".join(parts) if parts else None


def search_options(
    params: Mapping[str, Any], index_views: Sequence[str], *, also: Sequence[str] = ()
) -> dict[str, Any]:
    """The keyword options of Catalog.search_images / search_ids for these request parameters
    (`also`: the other parameters the endpoint takes itself, such as `id`)."""
    unknown = sorted(set(params) - set(PARAMETERS) - set(also))
    if unknown:
        known = ", ".join(sorted((*PARAMETERS, *also)))
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}: use {known}")
    try:
        rules = Rules(
            filters=parse_filters(texts(params, "filter")),
            exclude_ids=parse_ids(joined(params, "exclude_ids")),
            boosts=parse_boosts(texts(params, "boost")),
            same_category=flag(params, "same_category"),
            category_key=str(one(params, "category_key") or CATEGORY_KEY),
        )
    except ValueError as exc:
        raise ValueError(f"rules: {exc}") from None
    keys = {*rules.filters, *(boost.key for boost in rules.boosts), rules.category_key}
    hidden = sorted(keys & set(HIDDEN_KEYS))
    if hidden:  # matching on them would let a client test guesses at server paths
        raise ValueError(f"rules: {', '.join(map(repr, hidden))} names server files, not a record field")
    views_text = joined(params, "views")
    views = [v.strip() for v in views_text.split(",") if v.strip()] if views_text else list(index_views)
    check_views(views, index_views, holder="the index")
    weights_text = joined(params, "weights")
    try:
        weights = parse_weights(weights_text, views) if weights_text else None
    except ValueError as exc:
        raise ValueError(f"weights: {exc}") from None
    options = {
        "k": whole_number(params, "top_k", DEFAULT_TOP_K, top=MAX_TOP_K),
        "rules": rules,
        "views": views,
        "weights": weights,
        "candidates": whole_number(params, "candidates", CANDIDATE_FACTOR, top=100),
        "crops": str(one(params, "crops") or SearchOptions.crops),
        "rerank": str(one(params, "rerank") or SearchOptions.rerank),
    }
    SearchOptions(**options)  # the Catalog's own checks (crops, rerank), before any work is done
    return options

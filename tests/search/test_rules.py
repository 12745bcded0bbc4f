import pytest

from simfusion.search.rules import (
    Boost,
    Rules,
    apply_rules,
    infer_category,
    matches,
    parse_boosts,
    parse_filters,
    parse_ids,
)


def hits():
    return [
        {"id": "a", "score": 0.9, "category": "sneaker", "brand": "acme", "price": 50},
        {"id": "b", "score": 0.8, "category": "sandal", "brand": "acme", "price": 20},
        {"id": "c", "score": 0.7, "category": "sneaker", "brand": "other", "price": 50},
        {"id": "d", "score": 0.6, "category": "sandal", "brand": "other"},
        {"id": "e", "score": -0.2, "category": "bag", "brand": "acme"},
    ]


def ids(found):
    return [hit["id"] for hit in found]


def test_no_rules_keep_the_ranking():
    assert not Rules()
    assert ids(apply_rules(hits(), Rules())) == ["a", "b", "c", "d", "e"]


def test_filters_are_exact_and_combine_with_and():
    assert ids(apply_rules(hits(), Rules(filters={"brand": "acme"}))) == ["a", "b", "e"]
    assert ids(apply_rules(hits(), Rules(filters={"brand": "acme", "category": "sandal"}))) == ["b"]
    assert ids(apply_rules(hits(), Rules(filters={"price": "50"}))) == ["a", "c"]
    assert ids(apply_rules(hits(), Rules(filters={"brand": "acm"}))) == []
    assert matches({"in_stock": True}, {"in_stock": "true"})


def test_exclude_ids():
    assert ids(apply_rules(hits(), Rules(exclude_ids={"a", "c", "zzz"}))) == ["b", "d", "e"]


def test_boost_reranks_and_keeps_the_raw_score():
    found = apply_rules(hits(), Rules(boosts=[Boost("brand", "other", 1.5)]))
    assert ids(found) == ["c", "a", "d", "b", "e"]
    assert found[0]["score"] == pytest.approx(1.05) and found[0]["raw_score"] == 0.7
    assert "raw_score" not in found[1]
    # a boost above 1 promotes a negative score too, one below 1 demotes
    found = apply_rules(hits(), Rules(boosts=[Boost("category", "bag", 2.0), Boost("id", "a", 0.5)]))
    assert found[-1]["id"] == "e" and found[-1]["score"] == pytest.approx(-0.1)
    assert ids(found)[:2] == ["b", "c"]


def test_same_category_with_given_and_inferred_category():
    assert ids(apply_rules(hits(), Rules(same_category=True), category="sandal")) == ["b", "d"]
    assert apply_rules(hits(), Rules(same_category=True), category=None) == []
    assert infer_category(hits()) == "sneaker"
    # score-weighted: one very close sandal beats two far sneakers
    votes = [
        {"id": "x", "score": 0.95, "category": "sandal"},
        {"id": "y", "score": 0.30, "category": "sneaker"},
        {"id": "z", "score": 0.29, "category": "sneaker"},
    ]
    assert infer_category(votes) == "sandal"
    assert infer_category(votes, top=0) is None
    assert infer_category([{"id": "q", "score": 1.0}]) is None


def test_parsers():
    assert parse_filters(["category=sneaker", "brand = acme"]) == {"category": "sneaker", "brand": "acme"}
    assert parse_boosts(["brand=acme:1.5", "url=http://x:2"]) == [
        Boost("brand", "acme", 1.5),
        Boost("url", "http://x", 2.0),
    ]
    assert parse_ids("a, b,,c") == {"a", "b", "c"}
    with pytest.raises(ValueError, match="key=value"):
        parse_filters(["category"])
    with pytest.raises(ValueError, match="key=value:factor"):
        parse_boosts(["brand:2"])
    with pytest.raises(ValueError, match="not a number"):
        parse_boosts(["brand=acme:lots"])
    with pytest.raises(ValueError, match="must be > 0"):
        parse_boosts(["brand=acme:0"])
    with pytest.raises(ValueError, match="<= 1e"):
        parse_boosts(["brand=acme:inf"])

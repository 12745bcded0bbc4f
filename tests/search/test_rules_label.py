"""`--same_category` falls back to the label the detector gave a record's main object."""

from simfusion.search.rules import Rules, apply_rules, infer_category, record_category


def labelled_hits():
    return [
        {"id": "car-1", "score": 0.9, "label": "car"},  # no category: its detected label counts
        {"id": "truck", "score": 0.8, "label": "truck"},
        {"id": "tagged", "score": 0.7, "category": "car", "label": "truck"},  # a given category wins
        {"id": "blob", "score": 0.6, "label": "object"},  # class-agnostic: says nothing
        {"id": "mnist", "score": 0.5, "label": 3},  # a dataset's class number is no category
        {"id": "car-2", "score": 0.4, "category": "", "label": "car"},
    ]


def test_record_category_prefers_the_category_then_a_detected_label():
    found = [record_category(hit) for hit in labelled_hits()]
    assert found == ["car", "truck", "car", None, None, "car"]
    assert record_category({"kind": "van", "label": "car"}, key="kind") == "van"


def test_same_category_matches_detected_labels():
    kept = apply_rules(labelled_hits(), Rules(same_category=True), category="car")
    assert [hit["id"] for hit in kept] == ["car-1", "tagged", "car-2"]
    query = {"id": "q", "label": "truck"}  # a query photo without a category, detected as a truck
    kept = apply_rules(labelled_hits(), Rules(same_category=True), category=record_category(query))
    assert [hit["id"] for hit in kept] == ["truck"]
    assert infer_category(labelled_hits()) == "car"
    assert infer_category([{"id": "x", "score": 1.0, "label": "object"}]) is None

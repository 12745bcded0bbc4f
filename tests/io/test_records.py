import io
import json

import pytest

from simfusion.io.records import (
    RecordError,
    mark_duplicates,
    output_relpath,
    parse_records,
    record_id,
    record_path,
    set_error,
    write_record,
)


def parse(text):
    return list(parse_records(io.StringIO(text)))


def test_json_lines_keep_every_field():
    records = parse(
        '{"id": "a", "image": "a.jpg", "price": 3.5}\n\n{"image_id": 7, "path": "b.png", "make": "vw"}\n'
    )
    assert records == [
        {"id": "a", "image": "a.jpg", "price": 3.5},
        {"image_id": 7, "path": "b.png", "make": "vw"},
    ]


def test_json_array_is_accepted():
    records = parse('  [\n {"id": "a", "image": "a.jpg"},\n {"id": "b", "image": "b.jpg"}\n]\n')
    assert [r["id"] for r in records] == ["a", "b"]


def test_bad_line_is_reported_with_its_number_and_skipped(caplog):
    records = parse('{"id": "a", "image": "a.jpg"}\n{broken\n[1, 2]\n{"id": "c", "image": "c.jpg"}\n')
    assert [r["id"] for r in records] == ["a", "c"]
    assert "line 2" in caplog.text
    assert "line 3" in caplog.text


def test_bad_array_is_reported(caplog):
    assert parse('[{"id": "a"},\n oops]') == []
    assert "bad JSON array" in caplog.text


def test_empty_input_gives_no_records():
    assert parse("") == []
    assert parse("\n\n") == []


def test_ids_and_paths_follow_the_prototype_keys():
    assert record_id({"image_id": 12, "image": "x.jpg"}) == "12"
    assert record_id({"id": "a", "image_id": 12}) == "a"
    assert record_id({"path": "dir/x.jpg"}) == "dir/x.jpg"
    assert record_path({"path": "dir/x.jpg"}) == "dir/x.jpg"
    with pytest.raises(RecordError, match="no image path"):
        record_path({"id": "a"})


def test_output_path_keeps_relative_paths_and_never_escapes():
    assert output_relpath({"id": "a", "image": "cars/a.jpg"}) == "cars/a.jpg"
    assert output_relpath({"id": "a/b", "image": "../x.jpg"}) == "a_b.jpg"
    assert output_relpath({"id": "q", "image": "/abs/q.png"}) == "q.png"


def test_duplicates_get_an_error_and_are_not_dropped(caplog):
    records = list(
        mark_duplicates([{"id": "a", "image": "1"}, {"id": "b", "image": "2"}, {"id": "a", "image": "3"}])
    )
    assert len(records) == 3
    assert "error" not in records[0] and "error" not in records[1]
    assert records[2]["error"].startswith("input: duplicate id 'a'")
    assert "duplicate id" in caplog.text


def test_record_without_path_or_id_gets_an_error():
    (record,) = mark_duplicates([{"category": "car"}])
    assert record["error"].startswith("input:")


def test_write_record_is_one_json_line_and_handles_numpy():
    import numpy as np

    out = io.StringIO()
    write_record(
        set_error({"id": "a", "box": np.array([1, 2, 3, 4]), "s": np.float32(0.5)}, "stage", "boom"), out
    )
    line = out.getvalue()
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {"id": "a", "box": [1, 2, 3, 4], "s": 0.5, "error": "stage: boom"}

import io
import json
import os

import pytest

from simfusion.io.records import (
    RecordError,
    mark_duplicates,
    output_relpath,
    parse_records,
    record_id,
    record_json,
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
    skipped = []
    list(parse_records(io.StringIO('{broken\n{"id": "b"}\n[1, {"id": "c"}]\n'), skipped=skipped))
    assert skipped == [1, 3]  # a command counts them: line 3's first item is no object


def test_bad_array_gives_its_good_items_and_an_error_record(caplog):
    records = parse('[{"id": "a"},\n oops]')
    assert records[0] == {"id": "a"}
    assert records[1]["error"].startswith("input: JSON array broken at line 2")
    assert "line 2" in caplog.text


def test_first_line_with_a_wrong_character_is_one_bad_line_not_an_array(caplog):
    records = parse('[1 2]\n{"id": "a"}\n')
    assert records == [{"id": "a"}]
    assert "line 1" in caplog.text


def test_array_cut_at_a_non_utf8_line(caplog):
    records = list(parse_records(io.BytesIO(b'[{"id": "a"},\n{"id": "\xe9"},\n{"id": "b"}]\n')))
    assert records[0] == {"id": "a"}
    assert "line 2" in records[1]["error"] and "UTF-8" in caplog.text


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


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "not null"),
        ("", "is empty"),
        (True, "not bool"),
        ({"a": 1}, "not dict"),
        (1.5, "not float"),
        ("a\x00b", "NUL character"),  # HDF5 cannot store it: the whole batch used to fail
    ],
)
def test_a_given_id_that_is_not_a_string_or_whole_number_is_an_error_record(value, says):
    with pytest.raises(RecordError, match=says):
        record_id({"id": value, "image": "x.jpg"})
    first, second = mark_duplicates([{"id": value, "image": "x.jpg"}, {"id": "b", "image": "x.jpg"}])
    assert says in first["error"] and "error" not in second  # never the path "x.jpg" as its id


def test_output_path_is_made_from_the_id_and_never_escapes():
    assert output_relpath({"id": "a", "image": "cars/a.jpg"}) == "a.png"
    assert output_relpath({"image": "cars/a.jpg"}) == "cars/a.jpg.png"
    for record in ({"id": "../x", "image": "x.jpg"}, {"image": "/abs/q.png"}, {"id": "a//b"}, {"id": ".."}):
        rel = output_relpath(record)
        assert not os.path.isabs(rel) and ".." not in rel.split("/") and rel == os.path.normpath(rel)
        assert rel.endswith(".png") and "~" in rel


def test_output_paths_do_not_collide():
    # issue 15: an absolute path's fallback name met another record's own relative path
    assert output_relpath({"id": "photo-x", "image": "/x/good.jpg"}) != output_relpath(
        {"image": "photo-x.jpg"}
    )
    # two crops of one image
    assert output_relpath({"id": "a", "image": "x.jpg", "box": [0, 0, 5, 5]}) != output_relpath(
        {"id": "b", "image": "x.jpg", "box": [5, 5, 9, 9]}
    )
    ids = [
        "a/b",
        "a_b",
        "a b",
        "A_b",
        "a_B",
        "a.png/x",
        "a",
        "a.png",
        "x" * 300,
        "x" * 301,
        "é",
        "e",
        "~",
        "-",
    ]
    names = [output_relpath({"id": key, "image": "/i.jpg"}) for key in ids]
    assert len({name.lower() for name in names}) == len(ids)  # unique, even on a case-blind disk
    assert all(len(part.encode()) <= 255 for name in names for part in name.split("/"))
    # a file never sits where another record needs a folder
    folders = {"/".join(name.split("/")[:i]) for name in names for i in range(1, name.count("/") + 1)}
    assert not folders & set(names)


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


# ------------------------------------------------------------------ input framing (issue 15)


def parse_bytes(data):
    return list(parse_records(io.BytesIO(data)))


def test_json_lines_whose_first_line_holds_an_array_are_still_json_lines(caplog):
    records = parse('[{"id": "a", "image": "a.jpg"}]\n{"id": "b", "image": "b.jpg"}\n[1]\n{"id": "c"}\n')
    assert [r["id"] for r in records] == ["a", "b", "c"]
    assert "line 3" in caplog.text


def test_one_line_array_document_still_gives_its_items():
    assert [r["id"] for r in parse('[{"id": "a"}, {"id": "b"}]')] == ["a", "b"]


def test_unclosed_array_gives_what_parses_and_an_error_record(caplog):
    records = parse('[\n {"id": "a", "image": "a.jpg"},\n {"id": "b", "image": "b.jpg"},\n {"id": "c", "im')
    assert [r.get("id") for r in records] == ["a", "b", None]
    assert records[2]["error"].startswith("input: ")
    assert "line 4" in records[2]["error"] and "unread" in records[2]["error"]
    assert "line 4" in caplog.text


def test_a_later_line_cut_inside_an_array_is_only_that_line(caplog):
    records = parse('{"id": "a"}\n[{"id": "b"},\n{"id": "c"}\n')
    assert [r["id"] for r in records] == ["a", "c"]
    assert "line 2" in caplog.text


def test_array_with_garbage_after_it_reports_the_garbage():
    records = parse('[\n {"id": "a"}\n]\n{"id": "b"}\n')
    assert records[0] == {"id": "a"}
    assert "line 4" in records[1]["error"]


def test_byte_order_mark_keeps_the_first_record():
    text = '\ufeff{"id": "a", "image": "a.jpg"}\n{"id": "b", "image": "b.jpg"}\n'
    assert [r["id"] for r in parse(text)] == ["a", "b"]
    assert [r["id"] for r in parse_bytes(text.encode("utf-8"))] == ["a", "b"]
    assert [r["id"] for r in parse('\ufeff[{"id": "a"},\n{"id": "b"}]')] == ["a", "b"]


def test_deeply_nested_line_is_reported_and_skipped(caplog):
    deep = "[" * 100_000 + "]" * 100_000
    nested = '{"id": "x", "v": ' + "[" * 500 + "]" * 500 + "}"
    records = parse(f'{{"id": "a"}}\n{deep}\n{{"id": "b", "deep": {deep}}}\n{nested}\n{{"id": "c"}}\n')
    assert [r["id"] for r in records] == ["a", "c"]
    for number in (2, 3, 4):
        assert f"line {number}" in caplog.text


def test_non_utf8_bytes_skip_only_their_line(caplog):
    data = b'{"id": "a"}\n{"id": "caf\xe9"}\n\xff\xfe\n{"id": "b"}\n'
    assert [r["id"] for r in parse_bytes(data)] == ["a", "b"]
    assert "line 2" in caplog.text and "line 3" in caplog.text and "UTF-8" in caplog.text


def test_text_stdin_is_read_as_bytes(caplog):
    wrapper = io.TextIOWrapper(io.BytesIO(b'{"id": "a"}\n{"id": "\xe9"}\n{"id": "b"}\n'), encoding="utf-8")
    assert [r["id"] for r in parse_records(wrapper)] == ["a", "b"]


def test_unwritable_values_are_refused_at_the_input(caplog):
    # a lone surrogate cannot be written back as UTF-8; 5000 digits exceed Python's int parsing limit
    records = parse('{"id": "\\ud800"}\n{"id": "big", "n": ' + "9" * 5000 + '}\n{"id": "b"}\n')
    assert [r["id"] for r in records] == ["b"]
    assert "line 1" in caplog.text and "line 2" in caplog.text


def test_nan_and_infinity_are_written_as_null_and_a_nan_box_is_an_error(caplog):
    # Python's json reads them; predict.py and the service then wrote "price": NaN, which jq and a
    # browser's JSON.parse refuse. A business field is kept as null; a box the stages read is refused.
    lines = [
        '{"id": "a", "price": NaN}',
        '{"id": "b", "w": {"x": -Infinity}}',
        '[{"id": "c", "box": [1e400]}]',
    ]
    records = parse(
        "\n".join([*lines, '{"id": "d", "price": 2.5}', '{"id": "e", "s": "\\ud800", "x": NaN}', ""])
    )
    assert [r["id"] for r in records] == ["a", "b", "c", "d"]  # e: a lone surrogate, skipped as before
    assert records[0] == {"id": "a", "price": None} and records[1] == {"id": "b", "w": {"x": None}}
    assert records[2]["box"] == [None] and "`box` held NaN or Infinity" in records[2]["error"]
    assert "error" not in records[3] and "line 1: `price` held NaN" in caplog.text and "line 5" in caplog.text
    for record in records:
        json.loads(record_json(record), parse_constant=lambda name: pytest.fail(f"wrote {name}"))


def test_an_image_path_with_a_nul_is_not_an_id():
    with pytest.raises(RecordError, match="NUL character"):
        record_id({"image": "a\x00.jpg"})


def test_an_error_given_as_null_is_no_error():
    # `fusion.py --add` passed such a record through as failed: not added, and no message
    [record, failed] = parse('{"id": "a", "error": null}\n{"id": "b", "error": "thumbnail: gone"}\n')
    assert record == {"id": "a"} and failed["error"] == "thumbnail: gone"

import json
import os

import pytest
from conftest import synthetic_store

from simfusion.cli.duplicates import main
from simfusion.io.store import store_path
from simfusion.io.store_edit import append_items
from simfusion.search.build import build_catalog_index, index_path
from simfusion.search.catalog import Catalog
from simfusion.search.duplicates import duplicate_groups, find_duplicates
from simfusion.search.index_files import save_index


def test_groups_leave_the_item_itself_out_and_keep_those_at_or_above_the_threshold():
    hits = [
        [
            {"id": "a", "score": 1.0},
            {"id": "b", "score": 0.95},
            {"id": "c", "score": 0.9},
            {"id": "d", "score": 0.5},
        ],
        [{"id": "b", "score": 1.0}, {"id": "a", "score": 0.95}],
    ]
    assert duplicate_groups(["a", "b"], hits, threshold=0.9) == {
        "a": [["b", 0.95], ["c", 0.9]],
        "b": [["a", 0.95]],
    }
    assert duplicate_groups(["a", "b"], hits, threshold=0.99) == {"a": [], "b": []}


def model_with_copies(folder):
    """A synthetic catalog plus exact copies of two of its items (`copy-000`, `copy-001`)."""
    ids, records, views = synthetic_store(folder, n=30)
    copies = {f"copy-{i:03d}": ids[i] for i in range(2)}
    append_items(
        store_path(folder),
        views={view: (list(copies), maps[:2].copy()) for view, (_, maps, _) in views.items()},
        records=[
            {"id": key, "image": f"{key}.jpg", "category": records[i]["category"]}
            for i, key in enumerate(copies)
        ],
    )
    save_index(build_catalog_index(store_path(folder)), index_path(folder))
    with open(os.path.join(folder, "training.json"), "w") as out:
        json.dump({"input_size": [32, 32, 3], "views": {v: {"source": v} for v in views}}, out)
    return ids, copies


def test_exact_copies_are_found_both_ways_and_nothing_else_at_a_high_threshold(tmp_path):
    ids, copies = model_with_copies(tmp_path)
    groups = find_duplicates(Catalog.open(tmp_path), threshold=0.999, batch_size=7)
    assert set(groups) == set(ids) | set(copies)
    for copy, original in copies.items():
        assert [key for key, _ in groups[copy]] == [original] and groups[copy][0][1] == pytest.approx(
            1.0, abs=1e-5
        )
        assert [key for key, _ in groups[original]] == [copy]
    assert sum(bool(found) for found in groups.values()) == 4
    loose = find_duplicates(Catalog.open(tmp_path), threshold=-1, max_per_item=5)
    assert all(len(found) == 5 for found in loose.values())
    assert all(found == sorted(found, key=lambda pair: -pair[1]) for found in loose.values())
    with pytest.raises(ValueError, match="between -1 and 1"):
        find_duplicates(Catalog.open(tmp_path), threshold=1.5)


def test_cli_prints_one_line_per_item_and_checks_its_flags(tmp_path, capsys):
    _, copies = model_with_copies(tmp_path)
    assert main(["--model_save_path", str(tmp_path), "--threshold", "0.999", "--groups_only"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(line["id"] for line in lines) == sorted([*copies, *copies.values()])
    assert main(["--model_save_path", str(tmp_path / "nowhere")]) == 1
    for bad in (["--threshold", "3"], ["--views", "colour"], ["--weights", "edges=-1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model_save_path", str(tmp_path), *bad])
        assert exit_info.value.code == 2

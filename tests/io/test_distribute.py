"""The Ray distributor gives what the local one gives; a worker that dies has its batch redone.

Ray runs locally (2 CPUs) in this process; starting it takes seconds, so those tests are `slow`."""

import io
import json
import os
import sys

import numpy as np
import pytest

from simfusion.io.images import save_image
from simfusion.io.stage import StageCore, run_stage


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    # the crash core below lives in this test module, which Ray's workers cannot import by name
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from simfusion.io.distribute import start_ray

    start_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


def write_images(folder, count=12):
    """`count` seeded images of a coloured rectangle at varying places, plus a record with no image."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        image = np.full((48 + 4 * i, 64, 3), 235, np.uint8)
        x0, y0 = rng.integers(2, 20, size=2)
        image[y0 : y0 + 20, x0 : x0 + 30] = rng.integers(0, 200, size=3)
        name = f"sub/img-{i:02d}.png" if i % 3 else f"img-{i:02d}.jpg"
        save_image(str(folder / name), image)
        records.append({"id": f"r{i:02d}", "image": name, "price": i * 1.5})
    records.insert(5, {"id": "gone", "image": "missing.png"})
    return records


def run_cli(main, argv, lines, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(lines)))
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines(keepends=True)


def pipeline(distributor, base, out, records, monkeypatch, capsys):
    """object_detection (saliency detector) -> thumbnail -> views (canny), all under one distributor."""
    from simfusion.cli import detect, thumbnail, views

    common = ["--distributor", distributor, "--batch_size", "4", "--no_progress"]
    lines = [json.dumps(record) + "\n" for record in records]
    lines = run_cli(
        detect.main,
        ["--base_image_path", str(base), "--detector", "saliency", *common],
        lines,
        monkeypatch,
        capsys,
    )
    lines = run_cli(
        thumbnail.main,
        [
            "--base_image_path",
            str(base),
            "--output_image_path",
            str(out / "thumbs"),
            "--im_height",
            "32",
            "--im_width",
            "32",
            *common,
        ],
        lines,
        monkeypatch,
        capsys,
    )
    lines = run_cli(
        views.main,
        [
            "--base_image_path",
            str(out / "thumbs"),
            "--output_image_path",
            str(out / "views"),
            "--edges",
            "canny",
            *common,
        ],
        lines,
        monkeypatch,
        capsys,
    )
    return [json.loads(line.replace(str(out), "OUT")) for line in lines]


def files_under(folder):
    found = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, folder)] = stream.read()
    return found


@pytest.mark.slow
def test_ray_gives_the_same_records_and_files_as_local(ray_session, tmp_path, monkeypatch, capsys):
    records = write_images(tmp_path / "images")
    local = pipeline("local", tmp_path / "images", tmp_path / "local", records, monkeypatch, capsys)
    distributed = pipeline("ray", tmp_path / "images", tmp_path / "ray", records, monkeypatch, capsys)
    assert [r["id"] for r in distributed] == [r["id"] for r in records]
    assert distributed == local
    assert (
        distributed[5]["error"].startswith("object_detection: ") and "missing.png" in distributed[5]["error"]
    )
    assert sum("error" in r for r in distributed) == 1
    assert all(r["thumbnail"].startswith("OUT/thumbs/") for r in distributed if "error" not in r)
    local_files, ray_files = files_under(tmp_path / "local"), files_under(tmp_path / "ray")
    assert len(local_files) == 12 * 4  # a thumbnail and three views per good image
    assert ray_files == local_files


def crash_once(records, *, marker):
    """A batch core whose first call kills its worker process (as an out-of-memory kill would)."""
    if not os.path.exists(marker):
        with open(marker, "w") as stream:
            stream.write(str(os.getpid()))
        os._exit(1)
    return [{**record, "worker": os.getpid(), "done": record.get("done", 0) + 1} for record in records]


@pytest.mark.slow
def test_a_killed_worker_has_its_batch_redone(ray_session, tmp_path):
    marker = tmp_path / "crashed"
    records = [{"id": f"r{i:02d}", "image": f"{i}.png"} for i in range(12)]
    records[3]["error"] = "earlier_stage: kept as it is"
    stdin = io.StringIO("".join(json.dumps(r) + "\n" for r in records))
    stdout = io.StringIO()
    counts = run_stage(
        StageCore(crash_once, {"marker": str(marker)}),
        stage="crashy",
        batch_size=3,
        stdin=stdin,
        stdout=stdout,
        progress=False,
        distributor="ray",
    )
    out = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert marker.exists()  # a worker did die
    assert counts == {"records": 12, "errors": 1}
    assert [r["id"] for r in out] == [r["id"] for r in records]
    assert out[3] == records[3]
    assert all(r["done"] == 1 for i, r in enumerate(out) if i != 3)
    assert int(marker.read_text()) not in {r["worker"] for r in out if "worker" in r}


def test_ray_needs_a_stage_core():
    with pytest.raises(TypeError, match="StageCore"):
        run_stage(lambda batch: batch, stage="s", stdin=io.StringIO('{"id": "a"}\n'), distributor="ray")
    with pytest.raises(ValueError, match="distributor must be one of"):
        run_stage(lambda batch: batch, stage="s", stdin=io.StringIO(""), distributor="spark")


@pytest.mark.filterwarnings("ignore")
def test_local_never_imports_ray(tmp_path):
    import subprocess

    code = (
        "import io, sys\n"
        'sys.stdin = io.StringIO(\'{"id": "a", "image": "none.png"}\\n\')\n'
        "from simfusion.cli.thumbnail import main\n"
        f"main(['--output_image_path', {str(tmp_path)!r}, '--no_progress'])\n"
        "assert 'ray' not in sys.modules, 'local imported ray'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["error"].startswith("thumbnail: ")


def unwritable(records, *, folder):
    """A core whose every output fails as a full disk would."""
    from simfusion.io.stage import map_records

    return map_records(
        records, "t", lambda record: save_image(os.path.join(folder, "x.png"), np.zeros((4, 4), np.uint8))
    )


def test_a_ray_worker_whose_output_cannot_be_written_gives_its_batch_the_error(tmp_path):
    # the local run stops on an OutputError; a Ray actor (called here without Ray) must not raise it
    from simfusion.io.distribute import StageActor

    (tmp_path / "file").write_text("not a folder")
    actor = StageActor(StageCore(unwritable, {"folder": str(tmp_path / "file")}), "t")
    texts = [json.dumps({"id": "a"}), json.dumps({"id": "b", "error": "earlier: gone"})]
    out = actor({"seq": np.array([0, 1]), "record": np.array(texts, dtype=object)})
    records = [json.loads(text) for text in out["record"]]
    assert "cannot write" in records[0]["error"] and records[1]["error"] == "earlier: gone"

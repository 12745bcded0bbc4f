import subprocess
import sys

import pytest

from simfusion.cli.main import COMMANDS, main


def test_each_subcommand_runs_the_same_main_as_its_script(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([name, "--help"])
        assert exit_info.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_no_or_unknown_command_exits_2_with_the_list(capsys):
    assert main([]) == 2
    assert "thumbnail" in capsys.readouterr().err
    assert main(["colourise"]) == 2
    assert "unknown command 'colourise'" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "commands:" in capsys.readouterr().out


def test_python_dash_m_simfusion_dispatches():
    done = subprocess.run(
        [sys.executable, "-m", "simfusion", "thumbnail", "--im_height", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--im_height" in done.stderr


def test_a_reader_that_closes_stdout_early_ends_a_command_quietly(tmp_path):
    # `predict.py ... | head -c 10` ended in a BrokenPipeError traceback
    import json
    import subprocess

    from conftest import REPO

    records = "".join(json.dumps({"id": f"r{i}", "image": f"missing-{i}.png"}) + "\n" for i in range(3000))
    (tmp_path / "in.jsonl").write_text(records)
    command = [sys.executable, "thumbnail.py", "--base_image_path", str(tmp_path), "--no_progress"]
    command += ["--output_image_path", str(tmp_path / "t")]
    with open(tmp_path / "in.jsonl") as stdin:
        process = subprocess.Popen(
            command, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO
        )
        assert process.stdout.read(10)  # the first bytes of 3,000 error records, then `head` is gone
        process.stdout.close()
        _, err = process.communicate(timeout=120)
    assert process.returncode == 1
    assert b"stdout was closed" in err and b"Traceback" not in err

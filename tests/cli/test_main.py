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

"""Each script's --help: its defaults said, the paths it names real, the prototype's flags there."""

import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = ("detect", "thumbnail", "views", "train", "index", "predict", "evaluate", "serve", "duplicates")


def help_of(name: str) -> str:
    parser = importlib.import_module(f"simfusion.cli.{name}").build_parser()
    return " ".join(parser.format_help().split())  # one line: argparse wraps at the terminal's width


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_says_the_defaults_and_names_only_files_that_exist(name):
    text = help_of(name)
    assert "(default: None)" not in text and "(default: [])" not in text
    for path in re.findall(r"simfusion/[\w/]+\.py", text):
        assert os.path.exists(os.path.join(ROOT, path)), f"{name} --help names {path}, which is not there"


def test_the_stages_defaults_are_in_their_help():
    assert "--top_k TOP_K results per query (default: 10)" in help_of("predict")
    assert "--im_height IM_HEIGHT thumbnail height in pixels, at most 4096 (default: 128)" in help_of(
        "thumbnail"
    )
    assert "--threads THREADS requests worked on at once (default: 4)" in help_of("serve")
    detect = help_of("detect")  # takes the prototype's size flags, and says it does not use them
    assert "--im_height IM_HEIGHT thumbnail height in pixels (accepted for the prototype's" in detect
    assert "not used here" in detect


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_says_what_it_does(name):
    parser = importlib.import_module(f"simfusion.cli.{name}").build_parser()
    bare = [
        action.option_strings[0] for action in parser._actions if action.option_strings and not action.help
    ]
    assert not bare, f"{name} --help leaves {', '.join(bare)} unexplained"
    assert "--log_level {DEBUG,INFO,WARNING,ERROR} of the log on stderr (default: INFO)" in help_of(name)

"""The house rules that a reader relies on: imports point one way and have no cycle, modules and
functions stay small, the command layer is the only one that imports commands, and every file
the tools write is readable by others."""

import ast
import os
import stat

import numpy as np
import pytest
from conftest import REPO

from simfusion.io.atomic import write_json
from simfusion.io.images import save_image

PACKAGE = os.path.join(REPO, "simfusion")
# which layer may import which: a module imports only from its own layer or the ones before it
LAYERS = [
    "io",
    "models",
    ("detect", "views"),
    "learn",
    "pipeline",
    "search",
    "evaluate",
    "data",
    "serve",
    "cli",
]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def modules() -> dict[str, str]:
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                found[module] = path
    return found


def top_level_imports(path: str) -> set[str]:
    """The simfusion modules a file imports at module level (not inside functions)."""
    out = set()
    for node in ast.parse(open(path).read()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("simfusion"):
            out.add(node.module)
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("simfusion"))
    return out


def layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    for number, names in enumerate(LAYERS):
        if part in (names if isinstance(names, tuple) else (names,)):
            return number
    return -1  # simfusion/__init__.py, __main__


def test_imports_have_no_cycle():
    known = modules()
    graph = {
        m: {i for i in top_level_imports(p) if i in known and i != "simfusion"} for m, p in known.items()
    }
    state: dict[str, int] = {}

    def visit(module, trail):
        state[module] = 1
        for target in graph[module]:
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(target) :], target]))
            if not state.get(target):
                visit(target, [*trail, target])
        state[module] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [module])


def test_imports_point_from_the_commands_down_to_io():
    wrong = []
    for module, path in modules().items():
        for target in top_level_imports(path):
            if target.startswith("simfusion.") and layer(target) > layer(module) >= 0:
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(wrong)


def test_modules_and_functions_stay_small():
    big = []
    for module, path in modules().items():
        source = open(path).read()
        if source.count("\n") > MAX_MODULE_LINES:
            big.append(f"{module}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name != "build_parser":
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    big.append(f"{module}.{node.name}: {length} lines")
    assert not big, "\n".join(big)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_are_readable_by_others(tmp_path, umask):
    old = os.umask(umask)
    try:
        # the writer reads the umask once, at import; this checks the mode it gives for 022
        json_path = write_json(tmp_path / "a.json", {"x": np.float32(1.5)})
        image_path = save_image(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    for path in (json_path, image_path):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & 0o444 == 0o444, oct(mode)
    assert open(json_path).read().strip().endswith("}")
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")]

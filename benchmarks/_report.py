"""What every benchmark script shares: writing its own section of BENCHMARKS.md, and the machine line.

Each benchmark owns the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, so several
benchmarks update the one file without touching each other's results.
"""

from __future__ import annotations

import datetime
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "BENCHMARKS.md")


def write_section(name: str, text: str, path: str = BENCHMARKS) -> None:
    """Replace section `name` of BENCHMARKS.md (between its markers), or append it; atomic."""
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else "# Benchmarks\n\n"
    if begin in old and end in old:
        head, rest = old.split(begin, 1)
        new = head + block.rstrip("\n") + rest.split(end, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + block
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(new)
    os.replace(tmp, path)


def publish(name: str, text: str, *, write: bool = True) -> int:
    """Print a benchmark's section and, unless `write` is false (--no_write), write it; returns 0."""
    print(text)
    if write:
        write_section(name, text)
    return 0


def machine() -> str:
    """`N CPU cores, no GPU` (an NVIDIA device node counts as a GPU; TensorFlow is not asked: slow)."""
    gpu = "NVIDIA GPU" if os.path.exists("/dev/nvidia0") else "no GPU"
    return f"{os.cpu_count()} CPU cores, {gpu}"


def today() -> str:
    return datetime.date.today().isoformat()


def load_average() -> str:
    """The 1-minute load average, so readers can tell when other work shared the cores."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "unknown"

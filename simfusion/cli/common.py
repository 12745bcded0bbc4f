"""Flags and logging every command shares."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import re
import sys
import threading


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every flag's help says its default, where it has one worth saying (not None, off or empty) and
    the help does not say it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        default = action.default
        unsaid = default is None or default is False or default is argparse.SUPPRESS or default in ([], "")
        if unsaid or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# A thumbnail side above this is a slip: 100,000 px asked OpenCV for 29 GB, and 20,000 px wrote
# 400 MP images that the next stage's pixel cap refuses.
MAX_THUMBNAIL_SIDE = 4096


def thumbnail_side(text: str) -> int:
    value = positive_int(text)
    if value > MAX_THUMBNAIL_SIDE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THUMBNAIL_SIDE} pixels, not {text}")
    return value


def add_image_arguments(
    parser: argparse.ArgumentParser, *, output: bool = True, size: bool = True, size_used: bool = True
) -> None:
    """The prototype's flags, kept working: input and output folders and the thumbnail size
    (`size_used` False: accepted so the prototype's command lines run, and said to be unused)."""
    parser.add_argument(
        "--base_image_path", default=".", help="folder the records' image paths are relative to"
    )
    if output:
        parser.add_argument("--output_image_path", help="folder to write this stage's images under")
    if size:
        unused = "" if size_used else " (accepted for the prototype's command lines; not used here)"
        at_most = f", at most {MAX_THUMBNAIL_SIDE}"
        side, at_most = (thumbnail_side, at_most) if size_used else (positive_int, "")
        for flag, kind, default, text in (
            ("--im_height", side, 128, "thumbnail height in pixels" + at_most),
            ("--im_width", side, 128, "thumbnail width in pixels" + at_most),
        ):
            parser.add_argument(flag, type=kind, default=default, help=text + unused)
        channel = "1 (gray) or 3 (RGB)" + unused
        parser.add_argument("--im_channel", type=int, choices=(1, 3), default=3, help=channel)


def add_run_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 32) -> None:
    """Batch size, overwrite and logging flags common to the stages."""
    parser.add_argument("--batch_size", type=positive_int, default=batch_size, help="records per batch")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")
    add_log_level_argument(parser)
    parser.add_argument("--no_progress", action="store_true", help="no progress bar on stderr")
    add_distributor_arguments(parser)


def add_log_level_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log_level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="of the log on stderr",
    )


def add_distributor_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the batch core runs: this process, or Ray workers (local Ray, or a cluster's address)."""
    import os

    distributor = os.environ.get("SIMFUSION_DISTRIBUTOR", "local")
    parser.add_argument(
        "--distributor",
        choices=("local", "ray"),
        default=distributor if distributor in ("local", "ray") else "local",
        help="local: this process (default; env SIMFUSION_DISTRIBUTOR); ray: Ray Data actors, one "
        "per CPU or GPU, models built once per worker",
    )
    parser.add_argument(
        "--ray_address",
        default=os.environ.get("RAY_ADDRESS") or None,
        help="Ray cluster to join, e.g. ray://head:10001 (env RAY_ADDRESS; default: start a local Ray)",
    )


def run_script(main) -> int:
    """`main()`'s exit code; a reader that closes stdout early (`predict.py ... | head`) ends the
    command with one line on stderr and exit 1, not a BrokenPipeError traceback."""
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at /dev/null, not at the closed pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("stdout was closed before every record was written", file=sys.stderr)
        return 1


def check_detector(parser: argparse.ArgumentParser, spec: str | None) -> None:
    """A `--detector` spec that cannot work is a usage error before any record is read (it was an
    error on every query); checked without loading it (the catalog builds it once). None (the
    catalog's own detector) is left to the catalog."""
    if not spec:
        return
    from simfusion.detect.registry import check_detector_spec

    try:
        check_detector_spec(spec)
    except ValueError as exc:
        parser.error(f"--detector {spec}: {exc}")


def text_path(text: str) -> str:
    """A folder the stored records will name (`fusion.py --add`'s): its bytes must be UTF-8, or
    no record naming it could be stored."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(
            f"{text.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8: records could not name it"
        ) from None
    return text


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text}")
    return value


def at_least(low: int):
    """An argparse type: a whole number of `low` or more."""

    def whole_number(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be a whole number of {low} or more, not {text}")
        return value

    return whole_number


non_negative_int = at_least(0)


def configure_logging(level: str = "INFO") -> None:
    """Logs go to stderr; stdout is kept for records. Quiets TensorFlow's C++ and FAISS's start-up chatter."""
    # Must be set before TensorFlow is first imported; the stages import it lazily.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_native_logs()
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


# TensorFlow 2.21's C++ side logs through absl before absl::InitializeLog() runs, and that early
# output ignores TF_CPP_MIN_LOG_LEVEL (and every other environment variable): its INFO lines, the
# "rebuild TensorFlow" CPU note and the failed CUDA probe of a machine without a GPU. They are
# dropped at the file-descriptor level; every other line, C++ warnings and errors included, passes.
NATIVE_NOISE = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: .* rebuild TensorFlow"
    r"|E\d{4} [\d:.]+ +\d+ cuda_(platform|executor|diagnostics)\.cc:\d+\] .*(cuInit|CUDA|kernel driver))"
)
_quiet = {"installed": False}


def quiet_native_logs() -> None:
    """Filter native libraries' start-up noise out of this process's stderr (fd 2); a no-op where
    stderr is not the real one (tests capture it) or the filter is already in place."""
    if _quiet["installed"] or sys.stderr is not sys.__stderr__:
        return
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except (OSError, ValueError):
        return
    _quiet["installed"] = True
    pump = threading.Thread(target=_pass_lines, args=(read_end, real), name="stderr-filter", daemon=True)
    pump.start()

    def restore() -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes the pipe's last write end: the pump sees EOF and drains
        pump.join(timeout=2)

    atexit.register(restore)


def _noise(line: bytes) -> bool:
    return NATIVE_NOISE.match(line.decode("utf-8", "replace")) is not None


def _pass_lines(read_end: int, real: int) -> None:
    with os.fdopen(read_end, "rb", buffering=0) as source:
        pending = b""
        while chunk := source.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = b"".join(
                line + b"\n" for line in lines if not NATIVE_NOISE.match(line.decode("utf-8", "replace"))
            )
            if kept:
                os.write(real, kept)
        if pending:
            os.write(real, pending)

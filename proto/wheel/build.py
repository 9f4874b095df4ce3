"""Build the `lipsyncd-stages` wheel: proto/stages.py, stageclient.py and fakestages.py as
the package `lipsyncd_stages`, nothing else from the repository (no gateway, orchestrator
or model code). The three modules import each other relatively, so the same files are
`proto.*` here and `lipsyncd_stages.*` once installed.

    python proto/wheel/build.py --out DIR    # prints the wheel's path
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent
ROOT = PROTO.parent
PACKAGE = "lipsyncd_stages"
MODULES = ("stages.py", "stageclient.py", "fakestages.py")
INIT = '''"""lipsyncd's Triton stages for internal teams: the tensor contracts (`contract`, `Tensor`,
`MOUTH_PARAMS`), the gRPC clients `StageClient` (synchronous) and `AsyncStageClient`
(asyncio), the errors `StageRequestError` (do not retry) and `StageUnavailable` (retry),
and `FakeStageClient` / `FakeAsyncStageClient` for tests without a server."""
from .fakestages import FakeAsyncStageClient, FakeStageClient
from .stageclient import AsyncStageClient, StageClient
from .stages import (
    MOUTH_PARAMS,
    N_LANDMARKS,
    STAGE_MODELS,
    StageContract,
    StageRequestError,
    StageUnavailable,
    Tensor,
    contract,
)

__all__ = [
    "MOUTH_PARAMS", "N_LANDMARKS", "STAGE_MODELS", "AsyncStageClient", "FakeAsyncStageClient",
    "FakeStageClient", "StageClient", "StageContract", "StageRequestError", "StageUnavailable",
    "Tensor", "contract",
]
'''


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    """The main distribution's version (a regex: tomllib is not in Python 3.10)."""
    found = re.search(r'^version = "([^"]+)"', pyproject.read_text(), re.MULTILINE)
    if found is None:
        raise SystemExit(f"no version in {pyproject}")
    return found.group(1)


def build_wheel(out: Path) -> Path:
    """Build the wheel into `out` (created if needed) and return its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lipsyncd-stages-") as scratch:
        source = Path(scratch)
        package = source / PACKAGE
        package.mkdir()
        for name in MODULES:
            shutil.copyfile(PROTO / name, package / name)
        (package / "__init__.py").write_text(INIT)
        config = (HERE / "lipsyncd-stages.toml").read_text().replace("@VERSION@", project_version())
        (source / "pyproject.toml").write_text(config)
        before = set(out.glob("lipsyncd_stages-*.whl"))
        # The running interpreter's setuptools builds it: no download, no build isolation.
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
             "--wheel-dir", str(out), str(source)],
            check=True,
        )
    version = project_version()
    wheel = out / f"lipsyncd_stages-{version}-py3-none-any.whl"
    if not wheel.is_file():
        raise SystemExit(f"pip wheel did not write {wheel.name} (new files: {set(out.glob('*.whl')) - before})")
    return wheel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "dist", help="folder for the wheel")
    print(build_wheel(parser.parse_args().out))


if __name__ == "__main__":
    main()

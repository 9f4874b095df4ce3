"""The `lipsyncd-stages` wheel (proto/wheel/build.py) installed into a fresh virtual
environment, as an internal team without this repository would have it: the wheel with
`pip install --no-deps`, its two real dependencies (numpy, tritonclient[grpc]) seen from
this project's environment through a .pth line, never the repository itself."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

from proto.wheel.build import build_wheel


def installed_stages_python(folder: Path) -> Path:
    """Build the wheel, install it into a new venv under `folder`; that venv's python."""
    wheel = build_wheel(folder / "dist")
    env_dir = folder / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # Only the dependencies: a path added by a .pth line has its own .pth files ignored, so
    # this project's editable install (and with it the repository) stays invisible there.
    Path(purelib, "_lipsyncd_stages_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def run_outside(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `code` with that python, away from the repository (no PYTHONPATH, cwd elsewhere)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)

"""`make stages-wheel`: the stage contracts, clients and fakes installable on their own:
the wheel holds only them, installs into a fresh venv and works there
without the repository (the client against a real Triton: tests/integration/test_stages_triton.py)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

from proto.wheel.build import MODULES, PACKAGE, build_wheel
from tests.stages_wheel import installed_stages_python, run_outside

USE_OUTSIDE = """
import json, sys
import numpy as np
import lipsyncd_stages as ls
from lipsyncd_stages import FakeStageClient, StageClient, StageRequestError

fake = FakeStageClient()
answer = fake.infer("audio_features", audio=np.zeros(16000, np.float32), fps=np.array([25.0], np.float32))
try:  # checked against the contract before anything is sent (nothing listens on port 9)
    StageClient("127.0.0.1:9").infer("audio_features", audio=np.zeros(100, np.float64),
                                     fps=np.array([25.0], np.float32))
    refused = ""
except StageRequestError as exc:
    refused = str(exc)
print(json.dumps({
    "file": ls.__file__, "shape": list(answer["mouth_params"].shape), "columns": list(ls.MOUTH_PARAMS),
    "refused": refused, "models": list(ls.STAGE_MODELS),
    "repo_modules": sorted(m for m in sys.modules if m.split(".")[0] in
                           ("proto", "gateway", "orchestrator", "preprocess", "postprocess")),
}))
"""


def test_the_wheel_holds_only_the_contracts_clients_and_fakes(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    code = sorted(n for n in names if ".dist-info/" not in n)
    assert code == sorted(f"{PACKAGE}/{m}" for m in ("__init__.py", *MODULES))
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    requires = [line for line in metadata.decode().splitlines() if line.startswith("Requires-Dist:")]
    assert [r.split(":", 1)[1].strip().split(">=")[0] for r in requires] == ["numpy", "tritonclient[grpc]"]


def test_installed_into_a_fresh_venv_it_works_without_the_repository(tmp_path: Path) -> None:
    python = installed_stages_python(tmp_path)
    done = run_outside(python, USE_OUTSIDE, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert Path(seen["file"]).is_relative_to(tmp_path / "venv")
    assert seen["repo_modules"] == []
    assert seen["shape"] == [25, 8] and len(seen["columns"]) == 8
    assert "audio" in seen["refused"] and "float64" in seen["refused"]
    assert seen["models"] == ["audio_features", "face_detection", "generator"]

    # The repository's packages are not there (and the same check does see them from the repository).
    outside = run_outside(python, "import orchestrator", cwd=tmp_path)
    assert outside.returncode != 0 and "ModuleNotFoundError" in outside.stderr
    assert run_outside(python, "import orchestrator", cwd=Path(__file__).resolve().parents[2]).returncode == 0

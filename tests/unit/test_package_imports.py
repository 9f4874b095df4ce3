"""The package layering holds: gateway, preprocess and postprocess import nothing from the
orchestrator, and proto (the shared contract package) imports none of the service packages.
Read from the source with ast, so a lazy import inside a function counts too."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "gateway": {"orchestrator"},
    "preprocess": {"orchestrator", "gateway"},
    "postprocess": {"orchestrator", "gateway"},
    "proto": {"orchestrator", "gateway", "preprocess", "postprocess"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from orchestrator.fetch import x\n    import gateway.app\n")
    assert imported_packages(module) == {"orchestrator", "gateway"}


def test_the_orchestrator_keeps_numpy_to_one_thread() -> None:
    """Started however it is started, the orchestrator's BLAS runs in the calling thread: no
    pool of spinning helper threads beside the stages (a started process, as `python -m
    orchestrator.main` would be, with no thread settings in its environment)."""
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    code = ("import os, orchestrator.main, numpy; "
            "print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])")
    answer = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            check=True, timeout=120)
    assert answer.stdout.split() == ["1", "1"]

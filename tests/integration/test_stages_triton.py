"""The three stages served by a real tritonserver on model_repository/, called over gRPC
through the orchestrator's typed client, as internal teams would call them."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from orchestrator.stages import TritonStages
from preprocess.align import extract_crop, face_crop_box
from preprocess.audio import decode_audio, normalise_loudness
from preprocess.decode import iter_video_frames, load_image
from proto.stageclient import StageClient, stage_error
from proto.stages import StageRequestError
from tests.integration.fixtures_triton import TritonServer
from tests.media import media_file
from tests.stages_wheel import installed_stages_python, run_outside

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def test_all_three_stage_models_are_ready(stages: TritonStages) -> None:
    assert await stages.ready()


async def test_audio_features_follow_the_speech_frame_by_frame(stages: TritonStages) -> None:
    speech = normalise_loudness(decode_audio(media_file("speech_en_1.wav"), 16_000, 600))
    features = await stages.audio_features(speech, 25.0)
    assert features.mouth_params.shape == (int(np.ceil(speech.size / 16_000 * 25)), 8)
    opening = features.mouth_params[:, 1]
    assert opening.max() > 0.3 and np.percentile(opening, 10) < 0.05
    assert np.corrcoef(opening, features.energy)[0, 1] > 0.3


async def test_a_request_the_stage_refuses_is_the_callers_error_not_an_outage(stages: TritonStages) -> None:
    # Past the client's checks (dtype and shape fit), refused by the stage itself: a request
    # error, which the orchestrator fails the job on instead of retrying as if Triton were down.
    with pytest.raises(StageRequestError, match="fps must be one positive number"):
        await stages.audio_features(np.zeros(16_000, np.float32), 0.0)


async def test_silence_gives_a_mouth_at_rest(stages: TritonStages) -> None:
    features = await stages.audio_features(np.zeros(16_000 * 2, np.float32), 25.0)
    assert features.mouth_params[:, :2].max() < 0.05


async def test_face_detection_finds_both_people_left_and_right(stages: TritonStages) -> None:
    image = load_image(media_file("duo_photo.png"), 40_000_000)
    faces = await stages.detect_faces(image, max_faces=4)
    assert len(faces) == 2
    centers = sorted(float(f.box[0] + f.box[2]) / 2 for f in faces)
    assert centers[0] < 500 < centers[1]
    for face in faces:
        assert face.landmarks.shape == (468, 3)
        # upper inner lip (13) sits below the eyes (159, 386) on an upright face
        assert face.landmarks[13, 1] > face.landmarks[159, 1]


async def test_face_detection_returns_no_rows_for_an_image_without_a_face(stages: TritonStages) -> None:
    noise = np.random.default_rng(3).integers(0, 255, (360, 480, 3), dtype=np.uint8)
    assert await stages.detect_faces(noise) == []


async def test_face_detection_tracks_a_batch_of_video_frames_like_frame_by_frame(stages: TritonStages) -> None:
    frames = np.stack(list(iter_video_frames(media_file("talk_a.mp4"), 25.0, (480, 480), 0))[:6])
    first = (await stages.detect_faces(frames[0]))[0]
    tracked = await stages.track_faces(frames[1:], max_faces=4, prior_boxes=first.box[None])
    assert [len(found) for found in tracked] == [1] * 5
    prior = first.box[None]
    for frame, found in zip(frames[1:], tracked):
        alone = (await stages.detect_faces(frame, max_faces=4, prior_boxes=prior))[0]
        np.testing.assert_allclose(found[0].landmarks, alone.landmarks, atol=1e-3)
        prior = alone.box[None]
    # a batch that starts without priors detects on its first frame
    fresh = await stages.track_faces(frames[:2])
    assert [len(found) for found in fresh] == [1, 1]


async def test_generator_opens_the_mouth_it_is_asked_to_open(stages: TritonStages) -> None:
    image = load_image(media_file("portrait_photo_a.png"), 40_000_000)
    face = (await stages.detect_faces(image))[0]
    box = face_crop_box(face.landmarks)
    crop = extract_crop(image, box)[None]
    landmarks = box.to_crop(face.landmarks)[None]
    params = np.zeros((2, 8), np.float32)
    params[1, :2] = 0.9    # jaw and lips wide open
    params[1, 5] = 0.8     # teeth showing
    out = await stages.generate(crop, landmarks, params, np.zeros((2, 4), np.float32))
    assert out.frames.shape == (2, box.size, box.size, 3)
    assert out.masks.shape == (2, box.size, box.size)
    assert out.masks[:, 0, :].max() == 0 and out.masks[:, :, -1].max() == 0
    lips = landmarks[0, [13, 14, 78, 308], :2]
    x0, y0 = lips.min(axis=0).astype(int) - 4
    x1, y1 = lips.max(axis=0).astype(int) + 12
    closed = out.frames[0, y0:y1, x0:x1].astype(float)
    opened = out.frames[1, y0:y1, x0:x1].astype(float)
    assert np.abs(opened - closed).mean() > 10  # the mouth region really changed


def _readme_snippet(section: str = "## Calling a stage directly") -> str:
    readme = (ROOT / "model_repository" / "README.md").read_text()
    return re.search(re.escape(section) + r".*?```python\n(.*?)```", readme, re.DOTALL).group(1)  # type: ignore[union-attr]


def test_the_readme_snippet_runs_against_triton(triton: TritonServer) -> None:
    snippet = _readme_snippet()
    assert len(snippet.strip().splitlines()) <= 6
    host_port = triton.grpc_url.removeprefix("grpc://")
    namespace: dict[str, object] = {}
    exec(compile(snippet.replace('"127.0.0.1:8011"', repr(host_port)), "README.md", "exec"), namespace)  # noqa: S102
    params = namespace["mouth_params"]
    assert isinstance(params, np.ndarray) and params.shape == (25, 8) and params.dtype == np.float32


def test_the_installed_wheel_runs_the_readme_snippet_against_triton(triton: TritonServer, tmp_path: Path) -> None:
    """The `lipsyncd-stages` wheel in a fresh venv, away from the repository (no orchestrator)."""
    snippet = _readme_snippet("### Without this repository")
    assert "from lipsyncd_stages import StageClient" in snippet and len(snippet.strip().splitlines()) <= 6
    host_port = triton.grpc_url.removeprefix("grpc://")
    code = snippet.replace('"127.0.0.1:8011"', repr(host_port)) + textwrap.dedent("""
        import json, sys
        print(json.dumps({"shape": list(mouth_params.shape), "dtype": str(mouth_params.dtype),
                          "orchestrator": "orchestrator" in sys.modules, "proto": "proto.stages" in sys.modules}))
        """)
    done = run_outside(installed_stages_python(tmp_path), code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"shape": [25, 8], "dtype": "float32", "orchestrator": False, "proto": False}


def test_sync_client_reads_instances_and_tells_request_errors(triton: TritonServer) -> None:
    with StageClient(triton.grpc_url) as client:
        assert client.ready()
        assert client.instance_count("audio_features") == _config_count("audio_features")
        assert client.instance_count("generator") == _config_count("generator")
        with pytest.raises(StageRequestError, match="dtype"):
            client.infer("audio_features", audio=np.zeros(100, np.int32), fps=np.array([25.0], np.float32))
        # A request past the client's checks that Triton refuses as invalid is not retryable.
        bad = grpcclient.InferInput("audio", [100], "INT32")
        bad.set_data_from_numpy(np.zeros(100, np.int32))
        with pytest.raises(InferenceServerException) as refused:
            client.connection.infer("audio_features", [bad])
        assert isinstance(stage_error("audio_features", refused.value), StageRequestError), refused.value.status()


async def test_async_client_and_orchestrator_read_instance_counts(stages: TritonStages) -> None:
    counts = await stages.load_instance_counts()
    assert counts == {name: _config_count(name) for name in ("audio_features", "face_detection", "generator")}


def _config_count(model: str) -> int:
    text = (ROOT / "model_repository" / model / "config.pbtxt").read_text()
    return sum(int(c) for c in re.findall(r"count:\s*(\d+)", text))

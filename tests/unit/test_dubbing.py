"""Unit tests of dubbing by re-synthesis (orchestrator.dubbing): each output frame is split
into a transplant (the chosen source frame's own mouth), a parametric fallback or a pass
through, rendered in batches with the stages faked; and, on the real test video, the chosen
reference mouths follow the new speech."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.batches import batch_spans
from orchestrator.dubbing import PARAMETRIC, SourceVideo, choose_references, render_dub
from orchestrator.mouth_library import JAW, LIP_OPEN, N_PARAMS
from orchestrator.stages import DetectedFace, Rendered
from preprocess.decode import FrameStore
from tests.media import media_file

ROOT = Path(__file__).resolve().parents[2]
FACE_DIR = ROOT / "model_repository" / "face_detection" / "1"
SIZE_PX = 160
PARAMETRIC_VALUE = 251


def level(index: int) -> int:
    """The grey level of synthetic source frame `index` (so a crop tells where it came from)."""
    return 10 + 7 * index


def stored(frames: np.ndarray, folder: Path) -> FrameStore:
    store = FrameStore(folder / "frames.rgb", (frames.shape[2], frames.shape[1]))
    store.extend(frames)
    return store


def synthetic_source(folder: Path, count: int, faceless: tuple[int, ...] = ()) -> SourceVideo:
    rng = np.random.default_rng(0)
    frames = np.stack([np.full((SIZE_PX, SIZE_PX, 3), level(i), np.uint8) for i in range(count)])
    faces: list[DetectedFace | None] = []
    for i in range(count):
        if i in faceless:
            faces.append(None)
            continue
        landmarks = np.concatenate([rng.uniform(45, 115, (468, 2)), rng.normal(0, 3, (468, 1))], 1)
        landmarks[:2, :2] = [[45, 45], [115, 115]]  # the same face box in every frame
        faces.append(DetectedFace(box=np.array([45, 45, 115, 115], np.float32), score=0.99,
                                  landmarks=landmarks.astype(np.float32)))
    return SourceVideo(frames=stored(frames, folder), faces=faces)


class FakeStages:
    """generate(): a transplant returns the reference crops, the parametric generator a flat
    grey; masks are 1 everywhere, so the pasted face region shows what was rendered."""

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray | None]] = []

    async def generate(self, source: np.ndarray, source_landmarks: np.ndarray, mouth_params: np.ndarray,
                       motion: np.ndarray, reference: np.ndarray | None = None,
                       reference_landmarks: np.ndarray | None = None,
                       reference_opening: np.ndarray | None = None) -> Rendered:
        self.calls.append({"source": source, "source_landmarks": source_landmarks, "mouth_params": mouth_params,
                           "reference": reference, "reference_landmarks": reference_landmarks,
                           "reference_opening": reference_opening})
        frames = reference.copy() if reference is not None else np.full_like(source, PARAMETRIC_VALUE)
        return Rendered(frames=frames, masks=np.ones(source.shape[:3], np.float32))


class ListWriter:
    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, rgb: np.ndarray) -> None:
        self.frames.append(rgb.copy())


def run_render(source: SourceVideo, order: np.ndarray, references: np.ndarray | None,
               batch: int = 4, openings: np.ndarray | None = None) -> tuple[FakeStages, ListWriter, list[int]]:
    stages, writer, progress = FakeStages(), ListWriter(), []
    params = np.tile(np.arange(len(order), dtype=np.float32)[:, None], (1, N_PARAMS))

    async def on_batch(done: int) -> None:
        progress.append(done)

    asyncio.run(render_dub(source, order, params, writer, stages, batch, on_batch, references,  # type: ignore[arg-type]
                           openings))
    return stages, writer, progress


def centre(frame: np.ndarray) -> int:
    return int(frame[SIZE_PX // 2, SIZE_PX // 2, 0])


def test_each_output_frame_gets_its_reference_mouth_or_the_fallback(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path, 12, faceless=(5,))
    order = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 10])
    refs = np.array([7, 7, PARAMETRIC, 3, 9, 2, 6, PARAMETRIC, 8, 5, 0, 11, 1])
    stages, writer, progress = run_render(source, order, refs)
    assert len(writer.frames) == len(order)
    assert progress == [stop for _, stop in batch_spans(len(order), 4)]  # a span at a time
    for k, frame in enumerate(writer.frames):
        target, ref = order[k], refs[k]
        if target == 5 or ref == target:  # no face / its own mouth chosen: untouched
            np.testing.assert_array_equal(frame, source.frames[target])
        elif ref == PARAMETRIC or ref == 5:  # the chosen frame has no face: fallback
            assert centre(frame) == PARAMETRIC_VALUE, k
        else:
            assert abs(centre(frame) - level(ref)) <= 1, k
            assert abs(int(frame[1, 1, 0]) - level(target)) <= 1  # outside the face box: the target frame


def test_transplant_and_fallback_frames_go_in_separate_calls_with_one_crop_size(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path, 8)
    order = np.arange(8)
    refs = np.array([3, PARAMETRIC, 5, 6, PARAMETRIC, PARAMETRIC, 0, 1])
    stages, _, _ = run_render(source, order, refs, batch=8)
    transplant = [c for c in stages.calls if c["reference"] is not None]
    parametric = [c for c in stages.calls if c["reference"] is None]
    assert len(transplant) == 1 and len(parametric) == 1
    call = transplant[0]
    assert call["source"].shape[0] == 5 and call["reference"].shape == call["source"].shape  # type: ignore[union-attr]
    assert call["reference_landmarks"].shape == (5, 468, 3)  # type: ignore[union-attr]
    # Sources are the output frames' own crops; references are the chosen frames' crops.
    assert [int(c[0, 0, 0]) for c in call["source"]] == [level(i) for i in (0, 2, 3, 6, 7)]  # type: ignore[union-attr]
    assert [int(c[0, 0, 0]) for c in call["reference"]] == [level(i) for i in (3, 5, 6, 0, 1)]  # type: ignore[union-attr]
    assert parametric[0]["mouth_params"][:, 0].tolist() == [1.0, 4.0, 5.0]  # type: ignore[index]
    sizes = {c["source"].shape[1:] for c in stages.calls}  # type: ignore[union-attr]
    assert len(sizes) == 1


def test_openings_go_with_their_references_and_reopen_a_frames_own_mouth(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path, 6)
    order = np.arange(6)
    refs = np.array([3, 1, 2, PARAMETRIC, 1, 0])  # frames 1, 2 show their own mouths
    openings = np.array([0.1, 0.0, 0.2, 0.0, 0.0, 0.05], np.float32)
    stages, _, _ = run_render(source, order, refs, batch=6, openings=openings)
    (call,) = [c for c in stages.calls if c["reference"] is not None]
    # frame 1 (own mouth, no opening) is left alone; frame 2 (own mouth, opened) is rendered
    assert [int(c[0, 0, 0]) for c in call["reference"]] == [level(i) for i in (3, 2, 1, 0)]  # type: ignore[union-attr]
    np.testing.assert_array_equal(call["reference_opening"], np.array([0.1, 0.2, 0.0, 0.05], np.float32))
    stages, _, _ = run_render(source, order, refs, batch=6, openings=np.zeros(6, np.float32))
    assert all(c["reference_opening"] is None for c in stages.calls)  # nothing to open: not sent


def test_without_references_every_face_frame_is_parametric(tmp_path: Path) -> None:
    source = synthetic_source(tmp_path, 6, faceless=(2,))
    stages, writer, _ = run_render(source, np.arange(6), None, batch=3)
    assert all(c["reference"] is None for c in stages.calls)
    assert [centre(f) for f in writer.frames] == [PARAMETRIC_VALUE] * 2 + [level(2)] + [PARAMETRIC_VALUE] * 3


@pytest.fixture(scope="module")
def tracked_video(tmp_path_factory: pytest.TempPathFactory) -> SourceVideo:
    video = media_file("talk_a.mp4")
    if not (FACE_DIR / "face_landmark.onnx").is_file():
        pytest.skip("face_detection models missing")
    if str(FACE_DIR) not in sys.path:
        sys.path.insert(0, str(FACE_DIR))
    from facemesh import FaceMesh
    from preprocess.decode import iter_video_frames

    mesh = FaceMesh(FACE_DIR)
    frames, faces = [], []
    for index, frame in enumerate(iter_video_frames(video, 22.131, (320, 320))):
        found = mesh.detect(frame, max_faces=1)
        frames.append(frame)
        faces.append(DetectedFace(box=found[0].box, score=found[0].score, landmarks=found[0].landmarks)
                     if found else None)
        if index >= 89:
            break
    return SourceVideo(frames=stored(np.stack(frames), tmp_path_factory.mktemp("dub")), faces=faces)


def lip_gap_iod(landmarks: np.ndarray) -> float:
    gap = np.mean([np.linalg.norm(landmarks[b, :2] - landmarks[a, :2]) for a, b in ((82, 87), (13, 14), (312, 317))])
    return float(gap / np.linalg.norm(landmarks[263, :2] - landmarks[33, :2]))


def test_chosen_mouths_follow_the_new_speech(tracked_video: SourceVideo) -> None:
    n = 60
    target = np.zeros((n, N_PARAMS), np.float32)
    target[:, LIP_OPEN] = 0.5 + 0.45 * np.sin(2 * np.pi * np.arange(n) / 12.0)  # syllables
    target[:, JAW] = 0.8 * target[:, LIP_OPEN]
    order = np.arange(n) % tracked_video.count
    refs = choose_references(tracked_video, order, target)
    assert refs.shape == (n,)
    chosen = refs >= 0
    assert chosen.mean() > 0.6  # this speaker's library covers most speech shapes
    gaps = np.array([lip_gap_iod(tracked_video.faces[r].landmarks) for r in refs[chosen]])  # type: ignore[union-attr]
    assert np.corrcoef(gaps, target[chosen, LIP_OPEN])[0, 1] > 0.5
    # the source's own mouth at those frames does not follow the new speech
    own = np.array([lip_gap_iod(tracked_video.faces[o].landmarks) for o in order[chosen]])  # type: ignore[union-attr]
    assert abs(np.corrcoef(own, target[chosen, LIP_OPEN])[0, 1]) < 0.5


def test_pasting_only_the_changed_square_matches_pasting_the_whole_crop() -> None:
    from orchestrator.dubbing.render import _paste_changed
    from postprocess.blend import paste_crop
    from preprocess.align import CropBox

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 255, (240, 260, 3), dtype=np.uint8)
    crop = rng.integers(0, 255, (192, 192, 3), dtype=np.uint8)
    mask = np.zeros((192, 192), np.float32)
    mask[110:170, 60:140] = 1.0
    mask[100:110, 60:140] = np.linspace(0, 1, 10)[:, None]  # a feathered top edge
    box = CropBox(x0=31.3, y0=-12.6, side=171.7, size=192)
    whole, part = frame.copy(), frame.copy()
    paste_crop(whole, crop, mask, box)
    _paste_changed(part, crop, mask, box)
    assert not np.array_equal(whole, frame)
    assert np.abs(whole.astype(int) - part).max() <= 1
    assert (np.abs(whole.astype(int) - part) > 0).mean() < 0.01


def test_only_the_frames_the_output_shows_are_tracked_but_at_least_a_library() -> None:
    from orchestrator.dubbing import LIBRARY_MIN_FRAMES, frames_to_track  # noqa: PLC0415

    assert frames_to_track(1500, 100, "cut_off") == LIBRARY_MIN_FRAMES  # a short voice on a long video
    assert frames_to_track(1500, 400, "bounce") == 400
    assert frames_to_track(1500, 400, "silence") == 1500  # the whole video is shown
    assert frames_to_track(1500, 4000, "bounce") == 1500
    assert frames_to_track(80, 40, "cut_off") == 80  # a short video: all of it


def test_the_library_of_a_long_video_is_a_bounded_sample_of_runs() -> None:
    from orchestrator.dubbing import library_sample  # noqa: PLC0415

    assert library_sample(300, max_frames=750).all()
    keep = library_sample(3000, max_frames=750, run=25)
    assert keep.sum() <= 750 and keep[0] and keep[-1]
    starts = np.flatnonzero(np.diff(keep.astype(int)) == 1) + 1
    assert len(starts) + 1 == 30  # 30 runs, the first at frame 0
    assert np.all(np.diff(np.flatnonzero(keep)[:25]) == 1)  # consecutive inside a run


def test_the_opening_shown_is_the_transplanted_mouths_or_the_parametric_one(tmp_path: Path) -> None:
    from orchestrator.dubbing import shown_opening  # noqa: PLC0415
    from orchestrator.mouth_library import Calibration, MouthLibrary  # noqa: PLC0415

    source = synthetic_source(tmp_path, 6, faceless=(4,))
    lib_params = np.zeros((6, N_PARAMS), np.float32)
    lib_params[:, LIP_OPEN] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    library = MouthLibrary(params=lib_params, raw=lib_params, pose=np.zeros((6, 3), np.float32),
                           usable=np.ones(6, bool), calibration=Calibration(np.zeros(N_PARAMS), np.ones(N_PARAMS)))
    order = np.array([0, 1, 2, 3, 4])
    refs = np.array([5, PARAMETRIC, 2, 1, 3])
    params = np.zeros((5, N_PARAMS), np.float32)
    params[:, LIP_OPEN] = 0.9
    opening = shown_opening(source, library, order, refs, params)
    np.testing.assert_allclose(opening[:4], [0.5, 0.9, 0.2, 0.1], atol=1e-6)
    assert np.isnan(opening[4])  # source frame 4 has no face: nothing is shown there

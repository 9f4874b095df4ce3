"""Real face crops for the generator's tests: frames of talk_a.mp4 (22.1 fps) with the lips
together (CLOSED_FRAME) and open mid-word with teeth showing (OPEN_FRAME), found by the
project's own face mesh and cut out at a given crop side."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from preprocess.align import extract_crop, face_crop_box
from preprocess.decode import iter_video_frames
from tests.media import media_file

FACE_DIR = Path(__file__).resolve().parents[1] / "model_repository" / "face_detection" / "1"
CLOSED_FRAME, OPEN_FRAME = 0, 29
TALK_A_FPS = 22.131


def face_mesh() -> Any:
    """The face_detection stage's FaceMesh (the test is skipped when its models are not built)."""
    if not (FACE_DIR / "face_landmark.onnx").is_file():
        pytest.skip("face_detection models missing (make models)")
    if str(FACE_DIR) not in sys.path:
        sys.path.insert(0, str(FACE_DIR))
    from facemesh import FaceMesh

    return FaceMesh(FACE_DIR)


def face_crops(mesh: Any, names: dict[int, str], side_px: int) -> dict[str, np.ndarray]:
    """{name: crop uint8 [S, S, 3], name + "_landmarks": [468, 3] in crop pixels} for each
    talk_a frame index in `names`, at 480 x 480."""
    out: dict[str, np.ndarray] = {}
    for index, frame in enumerate(iter_video_frames(media_file("talk_a.mp4"), TALK_A_FPS, (480, 480))):
        if index in names:
            landmarks = mesh.detect(frame, max_faces=1)[0].landmarks
            box = face_crop_box(landmarks, size=side_px)
            out[names[index]], out[names[index] + "_landmarks"] = extract_crop(frame, box), box.to_crop(landmarks)
        if index >= max(names):
            break
    return out

"""Unit tests of the mouth transplant (model_repository/generator/1/transplant.py and the graph
built by build_transplant.py) on two real frames of one talking video: a closed mouth
(target) and an open one (reference). Skipped when the face_detection models or the test
media are missing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
GEN_DIR = ROOT / "model_repository" / "generator"
FACE_DIR = ROOT / "model_repository" / "face_detection" / "1"
for entry in (GEN_DIR / "1", FACE_DIR):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import transplant as tp  # noqa: E402
from tests.talking_face import CLOSED_FRAME, OPEN_FRAME, face_crops, face_mesh  # noqa: E402

SIDE_PX = 256
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    mesh = face_mesh()
    return {"mesh": mesh, **face_crops(mesh, {CLOSED_FRAME: "target", OPEN_FRAME: "reference"}, SIDE_PX)}


def lip_gap_iod(landmarks: np.ndarray) -> float:
    gap = np.mean([np.linalg.norm(landmarks[b, :2] - landmarks[a, :2]) for a, b in ((82, 87), (13, 14), (312, 317))])
    return float(gap / np.linalg.norm(landmarks[263, :2] - landmarks[33, :2]))


def drop_iod(landmarks: np.ndarray) -> float:
    """Subnasale to chin, in inter-ocular distances."""
    return float(np.linalg.norm(landmarks[152, :2] - landmarks[2, :2]) / np.linalg.norm(landmarks[263, :2] - landmarks[33, :2]))


def test_mask_is_zero_at_the_crop_border_and_above_the_nose(crops: dict[str, np.ndarray]) -> None:
    _, mask = tp.transplant_mouth(crops["target"], crops["target_landmarks"], crops["reference"],
                                  crops["reference_landmarks"])
    assert mask.shape == (SIDE_PX, SIDE_PX) and mask.dtype == np.float32
    assert mask[0].max() == 0 and mask[-1].max() == 0 and mask[:, 0].max() == 0 and mask[:, -1].max() == 0
    # "Above the nose" in the face's own frame (eye line horizontal): the head may be rolled.
    lm = crops["target_landmarks"][:, :2].astype(np.float64)
    eyes = lm[[33, 133]].mean(0), lm[[362, 263]].mean(0)
    across = (eyes[1] - eyes[0]) / np.linalg.norm(eyes[1] - eyes[0])
    down = np.array([-across[1], across[0]])
    ys, xs = np.mgrid[0:SIDE_PX, 0:SIDE_PX]
    height = (xs - eyes[0][0]) * down[0] + (ys - eyes[0][1]) * down[1]
    assert mask[height < (lm[1] - eyes[0]) @ down].max() == 0
    # ...and it covers the whole original mouth, so none of its motion survives.
    lips = crops["target_landmarks"][list(INNER_LIPS) + [0, 17, 61, 291], :2].round().astype(int)
    assert mask[lips[:, 1], lips[:, 0]].min() > 0.99


def test_output_equals_the_target_outside_the_mask(crops: dict[str, np.ndarray]) -> None:
    crop, mask = tp.transplant_mouth(crops["target"], crops["target_landmarks"], crops["reference"],
                                     crops["reference_landmarks"])
    outside = mask == 0
    assert outside.mean() > 0.5
    assert np.array_equal(crop[outside], crops["target"][outside])


def test_the_reference_is_sampled_everywhere_it_shows(crops: dict[str, np.ndarray]) -> None:
    """The bicubic sample of the reference is taken only inside plan.reference_window: the
    blend (the reference's share) is exactly 0 outside it, and the window is smaller than
    the changing window (that is what it saves)."""
    plan = tp.plan_transplant(crops["target_landmarks"], crops["reference_landmarks"], SIDE_PX)
    _, _, w, h = plan.window
    rx, ry, rw, rh = (int(v) for v in plan.reference_window)
    assert 0 <= rx and 0 <= ry and rx + rw <= w and ry + rh <= h and rw * rh < w * h
    assert rx % tp.COARSE_STEP_PX == 0 and ry % tp.COARSE_STEP_PX == 0
    blend = tp.upsample(plan.blend_mask[0], h, w)[0]
    outside = np.ones((h, w), bool)
    outside[ry:ry + rh, rx:rx + rw] = False
    assert blend[~outside].max() > 0.99 and blend[outside].max() == 0.0


def test_the_lips_are_sampled_bicubic(crops: dict[str, np.ndarray]) -> None:
    """plan.sharp_window (bicubic) lies inside the reference's part of the window and holds
    every outer-lip landmark of the composite; it is smaller than that part (skin around it is
    sampled bilinear)."""
    plan = tp.plan_transplant(crops["target_landmarks"], crops["reference_landmarks"], SIDE_PX)
    x0, y0, _, _ = plan.window
    rx, ry, rw, rh = (int(v) for v in plan.reference_window)
    sx, sy, sw, sh = (int(v) for v in plan.sharp_window)
    assert 0 <= sx and 0 <= sy and sx + sw <= rw and sy + sh <= rh and sw * sh < rw * rh
    lips = plan.output_landmarks[list(tp.OUTER_LIPS)] - np.array([x0 + rx + sx, y0 + ry + sy])
    assert (lips >= 0).all() and (lips[:, 0] < sw).all() and (lips[:, 1] < sh).all()


def test_reference_equal_to_target_gives_back_the_target(crops: dict[str, np.ndarray]) -> None:
    crop, mask = tp.transplant_mouth(crops["target"], crops["target_landmarks"], crops["target"],
                                     crops["target_landmarks"])
    inside = mask > 0
    error = np.abs(crop.astype(np.float64) - crops["target"])[inside]
    assert error.mean() < 1.5 and np.percentile(error, 99) < 8


def test_open_reference_opens_the_mouth_and_moves_the_chin(crops: dict[str, np.ndarray]) -> None:
    target_lm, reference_lm = crops["target_landmarks"], crops["reference_landmarks"]
    plan = tp.plan_transplant(target_lm, reference_lm, SIDE_PX)
    crop, _ = tp.render_numpy(plan, crops["target"], crops["reference"])
    out_lm = plan.output_landmarks
    # The chin is planned where the reference's jaw drop (relative to the nose) puts it.
    assert abs(drop_iod(out_lm) - drop_iod(reference_lm)) < 0.02
    assert drop_iod(out_lm) > drop_iod(target_lm) + 0.03
    # Face Mesh on the composite sees the reference's open mouth and jaw, not the target's.
    def seen(image: np.ndarray) -> np.ndarray:
        return crops["mesh"].detect(image, max_faces=1)[0].landmarks

    target_gap, reference_gap = lip_gap_iod(seen(crops["target"])), lip_gap_iod(seen(crops["reference"]))
    assert reference_gap > target_gap + 0.05
    output = seen(crop)
    assert abs(lip_gap_iod(output) - reference_gap) < 0.4 * (reference_gap - target_gap)
    assert abs(drop_iod(output) - drop_iod(reference_lm)) < abs(drop_iod(output) - drop_iod(target_lm))


def test_onnx_graph_matches_the_numpy_reference(crops: dict[str, np.ndarray], tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("build_transplant", GEN_DIR / "build_transplant.py")
    assert spec is not None and spec.loader is not None
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    import onnx

    onnx.save(builder.build_graph(), str(tmp_path / tp.GRAPH_FILE))
    graph = tp.TransplantGraph(tmp_path)
    plan = tp.plan_transplant(crops["target_landmarks"], crops["reference_landmarks"], SIDE_PX)
    want_crop, want_mask = tp.render_numpy(plan, crops["target"], crops["reference"])
    got_crop, got_mask = graph.render(plan, crops["target"], crops["reference"])
    assert got_crop.shape == want_crop.shape and got_crop.dtype == np.uint8
    assert np.abs(got_crop.astype(int) - want_crop).max() <= 1
    assert np.abs(got_mask - want_mask).max() < 1e-5


def test_crops_of_different_sizes_are_rejected(crops: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError):
        tp.transplant_mouth(crops["target"], crops["target_landmarks"], crops["reference"][:128, :128],
                            crops["reference_landmarks"])

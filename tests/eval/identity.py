"""Is it still the same person, and is the rest of the picture untouched: dlib's ResNet face
descriptor (weights shipped by the face_recognition_models package; same person below
0.6), Procrustes distance of the upper-face landmarks, and PSNR/SSIM outside a face mask."""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

logger = logging.getLogger(__name__)

# Eyes, brows, nose and the upper face contour: shapes the mouth does not move.
UPPER_FACE = (33, 133, 159, 145, 160, 144, 158, 153, 263, 362, 386, 374, 387, 373, 385, 380,
              70, 63, 105, 66, 107, 336, 296, 334, 293, 300, 1, 4, 5, 6, 168, 197, 195, 98, 327,
              10, 338, 297, 332, 284, 251, 389, 356, 454, 234, 127, 162, 21, 54, 103, 67, 109)
NOSE_TIP, CHIN = 1, 152
SAME_PERSON_DISTANCE = 0.6  # dlib's documented threshold for its 128-d descriptor


def procrustes_distance(points: np.ndarray, reference: np.ndarray) -> float:
    """Residual of the best similarity transform of points onto reference, both centred and
    scaled to unit norm (0 = same shape; pose, size and in-plane rotation do not count)."""
    a = points - points.mean(0)
    b = reference - reference.mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    u, s, vt = np.linalg.svd(a.T @ b)
    return float(np.sqrt(max(0.0, 1.0 - s.sum() ** 2)))


def geometry_distance(landmarks: np.ndarray, reference: np.ndarray) -> float:
    """Median Procrustes distance of the upper-face landmarks over the frames with a face."""
    upper = list(UPPER_FACE)
    distances = [procrustes_distance(frame[upper, :2], reference[upper, :2])
                 for frame in landmarks if np.isfinite(frame[0, 0])]
    return float(np.median(distances)) if distances else float("nan")


def lower_face_mask(landmarks: np.ndarray, height: int, width: int, margin: float = 0.15) -> np.ndarray:
    """True over the lower face (nose tip down to below the chin, across the face width)."""
    xy = landmarks[:, :2]
    size = float(xy[:, 1].max() - xy[:, 1].min())
    x0, x1 = xy[:, 0].min() - margin * size, xy[:, 0].max() + margin * size
    y0, y1 = xy[NOSE_TIP, 1] - margin * size, xy[CHIN, 1] + margin * size
    return _box_mask(height, width, x0, y0, x1, y1)


def face_mask(landmarks: np.ndarray, height: int, width: int, margin: float = 0.25) -> np.ndarray:
    """True over the whole face box grown by margin of its size on every side."""
    xy = landmarks[:, :2]
    x0, y0 = xy.min(0)
    x1, y1 = xy.max(0)
    grow = margin * max(x1 - x0, y1 - y0)
    return _box_mask(height, width, x0 - grow, y0 - grow, x1 + grow, y1 + grow)


def _box_mask(height: int, width: int, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[max(0, int(y0)): max(0, int(np.ceil(y1))), max(0, int(x0)): max(0, int(np.ceil(x1)))] = True
    return mask


def masked_mse(a: np.ndarray, b: np.ndarray, keep: np.ndarray) -> float:
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.mean(diff[keep] ** 2)) if keep.any() else float("nan")


def psnr_from_mse(mse: float) -> float:
    return float("inf") if mse <= 0 else float(10 * np.log10(255.0**2 / mse))


def masked_ssim(a: np.ndarray, b: np.ndarray, keep: np.ndarray, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004, Gaussian window) of the luma over the kept pixels."""
    x, y = _luma(a), _luma(b)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = gaussian_filter(x, sigma), gaussian_filter(y, sigma)
    vx = gaussian_filter(x * x, sigma) - mx * mx
    vy = gaussian_filter(y * y, sigma) - my * my
    cxy = gaussian_filter(x * y, sigma) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim[keep].mean()) if keep.any() else float("nan")


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


class FaceEmbedder:
    """dlib's face recognition ResNet; unavailable (None embeddings) without its packages."""

    def __init__(self) -> None:
        self._models = None
        try:
            import dlib  # noqa: PLC0415 - optional measuring dependency

            spec = importlib.util.find_spec("face_recognition_models")
            if spec is None or not spec.submodule_search_locations:
                raise ImportError("face_recognition_models is not installed")
            model_dir = Path(spec.submodule_search_locations[0]) / "models"
            self._models = (dlib.get_frontal_face_detector(),
                            dlib.shape_predictor(str(model_dir / "shape_predictor_5_face_landmarks.dat")),
                            dlib.face_recognition_model_v1(str(model_dir / "dlib_face_recognition_resnet_model_v1.dat")))
        except ImportError as exc:
            logger.warning("no face descriptor (%s): identity uses landmark geometry only", exc)

    @property
    def available(self) -> bool:
        return self._models is not None

    def embed(self, rgb: np.ndarray, near_xy: np.ndarray) -> np.ndarray | None:
        """Descriptor of the detected face whose centre is closest to near_xy."""
        if self._models is None:
            return None
        detector, predictor, network = self._models
        image = np.ascontiguousarray(rgb)
        boxes = list(detector(image, 1))
        if not boxes:
            return None
        box = min(boxes, key=lambda r: float(np.hypot(r.center().x - near_xy[0], r.center().y - near_xy[1])))
        return np.asarray(network.compute_face_descriptor(image, predictor(image, box)), np.float64)

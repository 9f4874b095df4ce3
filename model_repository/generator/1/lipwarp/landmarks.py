"""MediaPipe Face Mesh (468-point) index sets the generator moves or pins, and the face frame.

Indices follow the canonical MediaPipe face mesh topology (Kartynnik et al. 2019). The face
frame measures everything in inter-ocular distances (IOD) along the eye line, so shape rules
work the same for any crop size, head roll and face scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Inner lip contour, corner to corner (subject's right corner 78 first), upper then lower.
INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
# Eyes: upper lid and the lower-lid point facing each upper-lid point, then fixed points.
RIGHT_UPPER_LID = (161, 160, 159, 158, 157)
RIGHT_LOWER_LID = (163, 144, 145, 153, 154)
LEFT_UPPER_LID = (388, 387, 386, 385, 384)
LEFT_LOWER_LID = (390, 373, 374, 380, 381)
# eye contours corner to corner (image left to right), 9 points each
RIGHT_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_UPPER = (362, 398, 384, 385, 386, 387, 388, 466, 263)
LEFT_LOWER = (362, 382, 381, 380, 374, 373, 390, 249, 263)
RIGHT_CREASE = (30, 27, 56)
LEFT_CREASE = (260, 257, 286)
EYE_ANCHORS = (33, 133, 159, 145, 263, 362, 386, 374)
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
EYE_RING = (130, 110, 23, 26, 243, 359, 339, 253, 256, 463)
BROWS = (70, 105, 107, 300, 334, 336)
NOSE = (1, 2, 98, 327, 168, 48, 278)
# Spread over the cheeks/forehead by farthest-point sampling on a reference face.
UPPER_FACE = (425, 101, 336, 107, 347, 151, 205, 108, 299, 69)
LOWER_FACE = (200, 427, 216, 432, 418, 194, 202, 436, 207, 164, 421, 201, 165, 391, 422, 212)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
JAW = (93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323)
UPPER_OVAL = (234, 127, 162, 21, 54, 103, 67, 109, 10, 338, 297, 332, 284, 251, 389, 356, 454)
CHIN = 152


@dataclass(frozen=True)
class FaceFrame:
    """Similarity frame of one face: origin between the eyes, x along the eye line, unit IOD."""

    origin: np.ndarray  # [2] pixels
    axis_x: np.ndarray  # [2] unit vector, image direction of the face's x (towards its left eye)
    axis_y: np.ndarray  # [2] unit vector, "down" in the face
    iod_px: float

    def to_face(self, points_px: np.ndarray) -> np.ndarray:
        rel = points_px[..., :2] - self.origin
        return np.stack([rel @ self.axis_x, rel @ self.axis_y], axis=-1) / self.iod_px

    def vector_to_px(self, vectors_iod: np.ndarray) -> np.ndarray:
        return (vectors_iod[..., :1] * self.axis_x + vectors_iod[..., 1:2] * self.axis_y) * self.iod_px


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    right = landmarks[list(RIGHT_EYE), :2].mean(axis=0)
    left = landmarks[list(LEFT_EYE), :2].mean(axis=0)
    iod = float(np.linalg.norm(left - right))
    if not np.isfinite(iod) or iod < 1.0:
        raise ValueError("degenerate landmarks: the eyes coincide")
    axis_x = (left - right) / iod
    axis_y = np.array([-axis_x[1], axis_x[0]])
    return FaceFrame(origin=(left + right) / 2, axis_x=axis_x, axis_y=axis_y, iod_px=iod)

"""Names, layouts and constants shared by the graph builder (`build.py`) and the renderer."""

from __future__ import annotations

GRAPH_FILE = "generator.onnx"  # frames of a prepared source
SOURCE_GRAPH_FILE = "source.onnx"  # a source, once: the mouth fill
CURVE_SEGMENTS = 10  # 11 inner-lip landmarks per curve
UPPER_SHARE = 0.3  # where the lips meet inside a gap, from the upper lip (see shapes.py)
SEAM_WIDTH_PX = 0.9
KERNEL_FLOOR = 1e-12  # r^2 floor before the log in the TPS kernel
# The spline is evaluated every 8 pixels and upsampled bilinearly (measured against every
# 6 px: 20 % less generator time, frames within 45-53 dB PSNR, differences only at the lip
# corners and edges, not visible), on at most 64x64 points (S=512: every 8 px).
COARSE_STEP_PX = 8
MAX_COARSE_CELLS = 64
WINDOW_START = 0.05  # border window: zero up to 5 % of the side, one from 15 %
WINDOW_END = 0.15

# palette rows (RGB, 0..255)
CAVITY, CAVITY_DEEP, TEETH, TONGUE, TEETH_SHADOW = range(5)
PALETTE_ROWS = 5

# `interior` vector
OPEN_STRENGTH, HALF_WIDTH_PX, TEETH_UPPER_PX, TEETH_LOWER_PX, TONGUE_VIS, TONGUE_PX, DEPTH_PX = range(7)
INTERIOR_LEN = 8

# tooth boundaries along the mouth (u, corner to corner = -1..1), closer together towards the
# sides where the dental arch turns away from the camera
UPPER_TOOTH_EDGES = (0.0, 0.24, -0.24, 0.42, -0.42, 0.56, -0.56, 0.68, -0.68)
LOWER_TOOTH_EDGES = (0.0, 0.15, -0.15, 0.3, -0.3, 0.44, -0.44)

# the band layer that paints the source's open mouth shut ("fill", once per source)
BAND_PARAMS = ("strength", "grow_top_px", "feather_top_px", "grow_bottom_px", "min_height_px",
               "line_fraction", "line_width_px", "line_strength", "end_fade_u", "highlight")
OUTPUTS = ("frame", "mask")

# eyelids: per eye (subject's right, then left) a source-space frame and two curves (upper lid
# margin, closed lid line); the blink stretches the lid skin above the margin down to the
# closing line inside the warp field (`eye_*` inputs, one per source; `blink` one per frame)
EYES = 2
LID_HEIGHT_PX, LASH_PX, LASH_CLOSED_PX, EDGE_SHADE, CAST_SHADOW = range(5)
EYE_PARAMS_LEN = 5

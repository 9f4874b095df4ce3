"""Builds the mouth-transplant pixel graph (opset 18) with onnx.helper: `1/transplant.onnx`.

One graph composites one frame's changing window (see `1/transplant.py`, which computes its
inputs and places the window back in the crop):
(1) upsample the coarse sampling offsets and masks to the window (Resize, linear),
(2) warp target and reference once each at native scale (the reference's lips and teeth are
resampled exactly once, bicubic; its skin and the target bilinear; GatherElements instead of GridSample, which is 5x
slower on CPU), (3) match the reference's colours to the
target's skin ring (mean/std in an opponent space, Reinhard et al. 2001), (4) blend with
the feathered mask and emit the crop (uint8) and the paste mask.

Usage: python model_repository/generator/build_transplant.py --out model_repository/generator/1
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent / "1"))
import transplant as spec  # noqa: E402

log = logging.getLogger("generator.build_transplant")
OPSET = 18
FLOAT = TensorProto.FLOAT


class _Graph:
    """Minimal SSA helper: every op returns the name of its output."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: object, dtype: type = np.float32) -> str:
        name = self._name("c")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, name: str | None = None, **attrs: object) -> str:
        out = name or self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def split(self, value: str, count: int, axis: int) -> list[str]:
        outs = [self._name("split") for _ in range(count)]
        self.nodes.append(helper.make_node("Split", [value], outs, axis=axis, num_outputs=count))
        return outs


def _upsample(g: _Graph, coarse: str, channels: int, out_hw: str) -> str:
    """[1, C, Gh, Gw] -> [C, H, W] (linear, half-pixel centres); out_hw is int64 [2]."""
    sizes = g.op("Concat", g.const([1, channels], np.int64), out_hw, axis=0)
    up = g.op("Resize", coarse, "", "", sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    return g.op("Squeeze", up, g.const([0], np.int64))


def _channel_offsets(g: _Graph, side_i: str, rank: int) -> str:
    """int32 [3, 1, ...] (rank dims): where each colour plane starts in the flattened planar image
    (int32 indices: half the memory traffic of int64, and 3 * S * S fits for any crop side)."""
    side = g.op("Cast", side_i, to=TensorProto.INT32)
    plane = g.op("Mul", side, side)
    return g.op("Mul", g.const(np.arange(3, dtype=np.int32).reshape((3,) + (1,) * (rank - 1)), np.int32), plane)


def _sample(g: _Graph, planes: str, px: str, py: str, side_i: str, last: str, out_hw: str) -> str:
    """Bilinear sample [3, H, W] of a planar S x S image flattened to [3*S*S] (float) at
    pixel-centre coordinates (edge clamped): the four taps of all three channels in one
    GatherElements, ten times cheaper than Gather or GridSample in ONNX Runtime on CPU."""
    x = g.op("Clip", px, g.const(0.0), last)
    y = g.op("Clip", py, g.const(0.0), last)
    x0, y0 = g.op("Floor", x), g.op("Floor", y)
    fx, fy = g.op("Sub", x, x0), g.op("Sub", y, y0)
    x1 = g.op("Min", g.op("Add", x0, g.const(1.0)), last)
    y1 = g.op("Min", g.op("Add", y0, g.const(1.0)), last)
    side_f = g.op("Cast", side_i, to=FLOAT)
    row0, row1 = g.op("Mul", y0, side_f), g.op("Mul", y1, side_f)
    taps = [g.op("Unsqueeze", g.op("Add", r, c), g.const([0], np.int64)) for r, c in
            ((row0, x0), (row0, x1), (row1, x0), (row1, x1))]
    pixel = g.op("Cast", g.op("Concat", *taps, axis=0), to=TensorProto.INT32)  # [4, H, W], cast once
    index = g.op("Add", g.op("Unsqueeze", pixel, g.const([0], np.int64)), _channel_offsets(g, side_i, 4))
    flat_index = g.op("Reshape", index, g.const([-1], np.int64))
    values = g.op("GatherElements", planes, flat_index, axis=0)
    shape = g.op("Concat", g.const([3, 4], np.int64), out_hw, axis=0)
    v00, v01, v10, v11 = (g.op("Squeeze", v, g.const([1], np.int64))
                          for v in g.split(g.op("Reshape", values, shape), 4, axis=1))
    top = g.op("Add", v00, g.op("Mul", g.op("Sub", v01, v00), fx))
    bottom = g.op("Add", v10, g.op("Mul", g.op("Sub", v11, v10), fx))
    return g.op("Add", top, g.op("Mul", g.op("Sub", bottom, top), fy))


def _cubic_weights(g: _Graph, t: str) -> list[str]:
    """Keys' cubic convolution weights (a = -0.5, Catmull-Rom) of the taps at -1, 0, 1, 2 for
    the fraction t: sharp (no low-pass at half-pixel offsets, unlike bilinear), sum 1."""
    t2 = g.op("Mul", t, t)
    t3 = g.op("Mul", t2, t)

    def poly(c3: float, c2: float, c1: float, c0: float) -> str:
        out = g.op("Add", g.op("Mul", t3, g.const(c3)), g.op("Mul", t2, g.const(c2)))
        return g.op("Add", g.op("Add", out, g.op("Mul", t, g.const(c1))), g.const(c0))

    return [poly(*row) for row in spec.CUBIC_COEFFICIENTS]


def _sample_cubic(g: _Graph, planes: str, px: str, py: str, side_i: str, last: str, out_hw: str) -> str:
    """Bicubic sample [3, H, W] (Keys, a = -0.5) of a planar S x S image flattened to [3*S*S]
    at pixel-centre coordinates, edge clamped: the 4 x 4 taps of all three channels in one
    GatherElements, then weighted along x and along y. Used for the reference: the
    transplanted mouth is resampled once, and this keeps its teeth and lip edges."""
    x = g.op("Clip", px, g.const(0.0), last)
    y = g.op("Clip", py, g.const(0.0), last)
    x0, y0 = g.op("Floor", x), g.op("Floor", y)
    first = g.const([0], np.int64)

    def stack(parts: list[str]) -> str:  # four [H, W] -> [4, H, W]
        return g.op("Concat", *(g.op("Unsqueeze", p, first) for p in parts), axis=0)

    wx = stack(_cubic_weights(g, g.op("Sub", x, x0)))
    wy = stack(_cubic_weights(g, g.op("Sub", y, y0)))
    side_f = g.op("Cast", side_i, to=FLOAT)
    cols = stack([g.op("Clip", g.op("Add", x0, g.const(float(d))), g.const(0.0), last) for d in (-1, 0, 1, 2)])
    rows = stack([g.op("Clip", g.op("Add", y0, g.const(float(d))), g.const(0.0), last) for d in (-1, 0, 1, 2)])
    taps = g.op("Add", g.op("Unsqueeze", g.op("Mul", rows, side_f), g.const([1], np.int64)),
                g.op("Unsqueeze", cols, first))  # [4 rows, 4 cols, H, W]
    pixel = g.op("Cast", taps, to=TensorProto.INT32)  # cast once, before the channels multiply it by 3
    index = g.op("Add", g.op("Unsqueeze", pixel, first), _channel_offsets(g, side_i, 5))  # [3, 4, 4, H, W]
    flat_index = g.op("Reshape", index, g.const([-1], np.int64))
    values = g.op("GatherElements", planes, flat_index, axis=0)
    shape = g.op("Concat", g.const([3, 4, 4], np.int64), out_hw, axis=0)
    along_x = g.op("ReduceSum", g.op("Mul", g.op("Reshape", values, shape), wx), g.const([2], np.int64), keepdims=0)
    return g.op("ReduceSum", g.op("Mul", along_x, wy), g.const([1], np.int64), keepdims=0)


def _ring_stats(g: _Graph, planes: str, ring: str, cells: str) -> tuple[str, str]:
    """Weighted mean and std [3] of the opponent colours over the ring, on 8x8-pooled pixels
    of the planar image (float [3*S*S])."""
    step = spec.COARSE_STEP_PX
    shape = g.op("Concat", g.const([3], np.int64), cells, g.const([step], np.int64), cells,
                 g.const([step], np.int64), axis=0)
    pooled = g.op("ReduceMean", g.op("Reshape", planes, shape), g.const([2, 4], np.int64), keepdims=0)  # [3, G, G]
    small = g.op("Transpose", pooled, perm=[1, 2, 0])  # [G, G, 3]
    opp = g.op("MatMul", small, g.const(spec.OPPONENT.T))
    weights = g.op("Unsqueeze", g.op("Squeeze", ring, g.const([0, 1], np.int64)), g.const([2], np.int64))
    axes = g.const([0, 1], np.int64)
    total = g.op("Max", g.op("ReduceSum", weights, axes, keepdims=0), g.const(1.0))
    mean = g.op("Div", g.op("ReduceSum", g.op("Mul", opp, weights), axes, keepdims=0), total)
    dev = g.op("Sub", opp, mean)
    var = g.op("Div", g.op("ReduceSum", g.op("Mul", g.op("Mul", dev, dev), weights), axes, keepdims=0), total)
    return mean, g.op("Sqrt", g.op("Add", var, g.const(1.0)))


def build_graph() -> onnx.ModelProto:
    g = _Graph()
    # 1. Sizes: the image side S, the window H x W (its coarse maps times the cell), and the
    #    window's pixel grid; images stay NHWC, flattened for Gather.
    side = g.op("Slice", g.op("Shape", "target"), g.const([1], np.int64), g.const([2], np.int64))
    side_s = g.op("Squeeze", side)
    cells = g.op("Div", side, g.const([spec.COARSE_STEP_PX], np.int64))
    last = g.op("Sub", g.op("Cast", side_s, to=FLOAT), g.const(1.0))
    out_hw = g.op("Mul", g.op("Slice", g.op("Shape", "blend_mask"), g.const([2], np.int64), g.const([4], np.int64)),
                  g.const([spec.COARSE_STEP_PX], np.int64))
    height, width = (g.op("Squeeze", part) for part in g.split(out_hw, 2, axis=0))

    def ramp(count: str) -> str:
        return g.op("Cast", g.op("Range", g.const(0, np.int64), count, g.const(1, np.int64)), to=FLOAT)

    col = g.op("Unsqueeze", ramp(width), g.const([0], np.int64))  # [1, W]
    row = g.op("Unsqueeze", ramp(height), g.const([1], np.int64))  # [H, 1]
    xs = g.op("Add", col, g.op("Mul", row, g.const(0.0)))  # [H, W]: column index
    ys = g.op("Add", row, g.op("Mul", col, g.const(0.0)))  # [H, W]: row index

    # Planar layout: per-pixel weights broadcast over the leading channel axis (fast in ORT).
    # Each image is cast to float once (the samplers and the colour statistics share it).

    def planar(image: str) -> str:
        """uint8 [1, S, S, 3] -> float [3*S*S]: transposed while still bytes, then cast once."""
        hwc = g.op("Reshape", image, g.const([-1, 3], np.int64))
        return g.op("Cast", g.op("Reshape", g.op("Transpose", hwc, perm=[1, 0]), g.const([-1], np.int64)), to=FLOAT)

    flat_t, flat_r = planar("target"), planar("reference")

    # 2. One sample of each image at base + upsampled offset (target bilinear here, reference below).
    def warp(flat: str, offset: str) -> str:
        up = _upsample(g, offset, 2, out_hw)
        px = g.op("Add", xs, g.op("Gather", up, g.const(0, np.int64), axis=0))
        py = g.op("Add", ys, g.op("Gather", up, g.const(1, np.int64), axis=0))
        return _sample(g, flat, px, py, side_s, last, out_hw)

    # The target moves only around the jaw (whole-pixel offsets elsewhere): bilinear; the
    # reference's mouth is resampled bicubic, so teeth keep their edges, and only inside
    # reference_window (x0, y0, w, h): outside it the reference's share is 0, and zeros
    # stand in (half the window or more at native crop sizes: the 48-tap sample is the cost).
    warped_t = warp(flat_t, "target_offset")
    up_r = _upsample(g, "reference_offset", 2, out_hw)
    x0_r, y0_r, w_r, h_r = g.split("reference_window", 4, axis=0)
    starts, sizes_r = g.op("Concat", y0_r, x0_r, axis=0), g.op("Concat", h_r, w_r, axis=0)
    ends, axes_hw = g.op("Add", starts, sizes_r), g.const([0, 1], np.int64)

    def inner(plane: str) -> str:
        return g.op("Slice", plane, starts, ends, axes_hw)

    px_r = inner(g.op("Add", xs, g.op("Gather", up_r, g.const(0, np.int64), axis=0)))
    py_r = inner(g.op("Add", ys, g.op("Gather", up_r, g.const(1, np.int64), axis=0)))
    # Bilinear over the reference's part, bicubic over its lips and teeth (sharp_window: x0, y0,
    # w, h inside it), where the 48-tap sample keeps edges; skin needs no more than 12 taps.
    smooth_r = _sample(g, flat_r, px_r, py_r, side_s, last, sizes_r)  # [3, h, w]
    x0_s, y0_s, w_s, h_s = g.split("sharp_window", 4, axis=0)
    starts_s, sizes_s = g.op("Concat", y0_s, x0_s, axis=0), g.op("Concat", h_s, w_s, axis=0)
    ends_s = g.op("Add", starts_s, sizes_s)
    px_s = g.op("Slice", px_r, starts_s, ends_s, axes_hw)
    py_s = g.op("Slice", py_r, starts_s, ends_s, axes_hw)
    sharp_r = _sample_cubic(g, flat_r, px_s, py_s, side_s, last, sizes_s)  # [3, hs, ws]
    pads_s = g.op("Concat", g.const([0], np.int64), starts_s, g.const([0], np.int64),
                  g.op("Sub", sizes_r, ends_s), axis=0)
    inside_s = g.op("Pad", g.op("Expand", g.const(1.0), g.op("Concat", g.const([1], np.int64), sizes_s, axis=0)),
                    pads_s, g.const(0.0), mode="constant")  # [1, h, w]: 1 inside sharp_window
    sampled_r = g.op("Add", g.op("Mul", smooth_r, g.op("Sub", g.const(1.0), inside_s)),
                     g.op("Pad", sharp_r, pads_s, g.const(0.0), mode="constant"))
    after = g.op("Sub", out_hw, ends)
    pads = g.op("Concat", g.const([0], np.int64), starts, g.const([0], np.int64), after, axis=0)
    warped_r = g.op("Pad", sampled_r, pads, g.const(0.0), mode="constant")

    # 3. Colour transfer on the skin rings (each measured on its own, unwarped crop), folded
    #    into one 3x3 matrix and a bias: inverse(OPP) diag(gain) OPP, inverse(OPP)(m_t - gain m_r).
    mean_t, std_t = _ring_stats(g, flat_t, "target_ring", cells)
    mean_r, std_r = _ring_stats(g, flat_r, "reference_ring", cells)
    gain = g.op("Clip", g.op("Div", std_t, std_r), g.const(spec.GAIN_LIMITS[0]), g.const(spec.GAIN_LIMITS[1]))
    inverse = np.linalg.inv(spec.OPPONENT.astype(np.float64)).astype(np.float32)
    scaled = g.op("Mul", g.const(spec.OPPONENT), g.op("Unsqueeze", gain, g.const([1], np.int64)))
    matrix = g.op("MatMul", g.const(inverse), scaled)
    bias = g.op("MatMul", g.const(inverse), g.op("Unsqueeze", g.op("Sub", mean_t, g.op("Mul", gain, mean_r)),
                                                  g.const([1], np.int64)))  # [3, 1]
    planar_shape = g.op("Concat", g.const([3, -1], np.int64), axis=0)
    matched_flat = g.op("Add", g.op("MatMul", matrix, g.op("Reshape", warped_r, planar_shape)), bias)
    matched = g.op("Reshape", matched_flat, g.op("Shape", warped_r))
    # Seam correction: the mismatch on the seam band, spread inwards by normalised convolution.
    step = spec.COARSE_STEP_PX
    diff = g.op("AveragePool", g.op("Unsqueeze", g.op("Sub", warped_t, matched), g.const([0], np.int64)),
                kernel_shape=[step, step], strides=[step, step])  # [1, 3, Gh, Gw]
    cols_t = g.op("Transpose", "seam_kernel_cols", perm=[1, 0])
    numerator = g.op("MatMul", g.op("MatMul", "seam_kernel_rows", g.op("Mul", diff, "seam_band")), cols_t)
    denominator = g.op("MatMul", g.op("MatMul", "seam_kernel_rows", "seam_band"), cols_t)
    correction = g.op("Div", numerator, g.op("Add", denominator, g.const(1e-3)))
    matched = g.op("Add", matched, _upsample(g, correction, 3, out_hw))

    # 4. Blend: the reference's share relative to the paste mask (paste_crop applies that one).
    def coefficient(i: int) -> str:
        return g.op("Gather", "nose_ramp", g.const(i, np.int64))

    def affine(i: int) -> str:
        return g.op("Add", g.op("Add", g.op("Mul", xs, coefficient(i)), g.op("Mul", ys, coefficient(i + 1))),
                    coefficient(i + 2))

    u = affine(0)
    t = g.op("Sub", affine(3), g.op("Mul", g.op("Mul", u, u), coefficient(6)))
    t = g.op("Clip", t, g.const(0.0), g.const(1.0))
    smooth = g.op("Mul", g.op("Mul", t, t), g.op("Sub", g.const(3.0), g.op("Mul", g.const(2.0), t)))
    blend = g.op("Mul", _upsample(g, "blend_mask", 1, out_hw), smooth)  # [1, H, W]
    paste = g.op("Max", blend, _upsample(g, "warp_mask", 1, out_hw))
    share = g.op("Min", g.op("Div", blend, g.op("Max", paste, g.const(1e-6))), g.const(1.0))
    composite = g.op("Add", warped_t, g.op("Mul", share, g.op("Sub", matched, warped_t)))
    rounded = g.op("Floor", g.op("Add", g.op("Clip", composite, g.const(0.0), g.const(255.0)), g.const(0.5)))
    crop = g.op("Transpose", g.op("Cast", rounded, to=TensorProto.UINT8), perm=[1, 2, 0])
    g.op("Unsqueeze", crop, g.const([0], np.int64), name="crop")
    g.op("Identity", paste, name="mask")

    def image(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.UINT8, [1, "S", "S", 3])

    def window_map(name: str, channels: int) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, FLOAT, [1, channels, "Gh", "Gw"])

    def crop_map(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, FLOAT, [1, 1, "G", "G"])

    inputs = [image("target"), image("reference"), window_map("target_offset", 2), window_map("reference_offset", 2),
              window_map("blend_mask", 1), window_map("warp_mask", 1),
              helper.make_tensor_value_info("nose_ramp", FLOAT, [7]), crop_map("target_ring"), crop_map("reference_ring"),
              window_map("seam_band", 1), helper.make_tensor_value_info("seam_kernel_rows", FLOAT, ["Gh", "Gh"]),
              helper.make_tensor_value_info("seam_kernel_cols", FLOAT, ["Gw", "Gw"]),
              helper.make_tensor_value_info("reference_window", TensorProto.INT64, [4]),
              helper.make_tensor_value_info("sharp_window", TensorProto.INT64, [4])]
    if tuple(i.name for i in inputs) != spec.INPUTS:
        raise RuntimeError("graph inputs out of step with transplant.INPUTS")
    outputs = [helper.make_tensor_value_info("crop", TensorProto.UINT8, [1, "H", "W", 3]),
               helper.make_tensor_value_info("mask", FLOAT, [1, "H", "W"])]
    graph = helper.make_graph(g.nodes, "mouth_transplant", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lipsyncd")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = args.out / spec.GRAPH_FILE
    onnx.save(build_graph(), str(path))
    log.info("wrote %s (%d bytes)", path, path.stat().st_size)


if __name__ == "__main__":
    main()

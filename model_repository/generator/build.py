"""Builds the generator's ONNX graph (opset 18) with onnx.helper: `1/generator.onnx`.

One graph renders one frame: (1) paint the source's open mouth shut with lip colour (so a
closing warp never drags a dark cavity along), (2) evaluate the thin-plate-spline backward
field (Bookstein 1989) on a coarse grid, window it to zero at the crop border and upsample
it, (3) warp with GridSample, (4) composite the synthesized mouth interior (cavity, teeth,
tongue) inside the target inner-lip contour, (5) emit the frame and a feathered paste mask.
Blinks paint closing eyelids the same way as step (1). The same file runs on ONNX Runtime (CPU) and converts to a TensorRT engine on GPU nodes.

Usage: python model_repository/generator/build.py --out model_repository/generator/1
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent / "1"))
from lipwarp import graphspec as spec  # noqa: E402

log = logging.getLogger("generator.build")
OPSET = 18
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class GraphBuilder:
    """Tiny SSA helper over onnx.helper: every op returns the name of its (first) output.

    A child builder (`branch`) collects the nodes of an If subgraph; names stay unique and
    constants live in the root graph (subgraphs may read outer-scope values)."""

    def __init__(self, parent: "GraphBuilder | None" = None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.root: GraphBuilder = parent.root if parent is not None else self
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self.root._count += 1
        return f"{hint}_{self.root._count}"

    def const(self, value: float | list[float] | np.ndarray, dtype: type = np.float32) -> str:
        name = self._name("c")
        self.root.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: object) -> str:
        return self.op_multi(op_type, *inputs, outputs=outputs, name=name, **attrs)[0]

    def op_multi(self, op_type: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs: object) -> list[str]:
        outs = [name or self._name(op_type.lower())] + [self._name(op_type.lower()) for _ in range(outputs - 1)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs

    def split(self, a: str, count: int) -> list[str]:
        """A 1-D tensor of `count` values -> `count` tensors of shape [1] (one node, no Gathers)."""
        return self.op_multi("Split", a, outputs=count, axis=0, num_outputs=count)

    def branch(self, condition: str, then: "Callable[[GraphBuilder], str]", otherwise: str) -> str:
        """If(condition) then `then(child)` else `otherwise`: skipped layers cost nothing."""
        results = []
        for body in (then, lambda child: child.op("Identity", otherwise)):
            child = GraphBuilder(self)
            out = child.op("Identity", body(child))
            info = helper.make_tensor_value_info(out, FLOAT, None)
            results.append(helper.make_graph(child.nodes, self._name("branch"), [], [info]))
        return self.op("If", condition, then_branch=results[0], else_branch=results[1])

    # arithmetic sugar
    def add(self, a: str, b: str) -> str:
        return self.op("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.op("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.op("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.op("Div", a, b)

    def clip01(self, a: str) -> str:
        return self.op("Clip", a, self.const(0.0), self.const(1.0))

    def lerp(self, a: str, b: str, t: str) -> str:
        return self.add(a, self.mul(self.sub(b, a), t))

    def smoothstep(self, t: str) -> str:
        t = self.clip01(t)
        return self.mul(self.mul(t, t), self.sub(self.const(3.0), self.mul(self.const(2.0), t)))

    def gather(self, a: str, index: int, axis: int = 0) -> str:
        return self.op("Gather", a, self.const(index, np.int64), axis=axis)

    def slice1(self, a: str, start: int, end: int, axis: int) -> str:
        return self.op("Slice", a, self.const([start], np.int64), self.const([end], np.int64), self.const([axis], np.int64))

    def reshape(self, a: str, shape: list[int]) -> str:
        return self.op("Reshape", a, self.const(shape, np.int64))


def roi_coordinates(g: GraphBuilder, roi: str, affine: str) -> tuple[str, str]:
    """(u, v) of every ROI pixel centre, [1,1,h,w], through the 2x3 mouth-frame affine."""
    start = g.slice1(roi, 0, 2, 0)
    size = g.sub(g.slice1(roi, 2, 4, 0), start)
    h, w = g.gather(size, 0), g.gather(size, 1)
    ys = g.op("Cast", g.op("Range", g.const(0, np.int64), h, g.const(1, np.int64)), to=FLOAT)
    xs = g.op("Cast", g.op("Range", g.const(0, np.int64), w, g.const(1, np.int64)), to=FLOAT)
    half = g.const(0.5)
    ys = g.op("Unsqueeze", g.add(ys, half), g.const([0, 1, 3], np.int64))  # [1,1,h,1]
    xs = g.op("Unsqueeze", g.add(xs, half), g.const([0, 1, 2], np.int64))  # [1,1,1,w]
    a00, a01, a02, a10, a11, a12 = g.split(g.reshape(affine, [6]), 6)
    coords = [g.add(g.add(g.mul(xs, a00), g.mul(ys, a01)), a02), g.add(g.add(g.mul(xs, a10), g.mul(ys, a11)), a12)]
    return coords[0], coords[1]


def lip_curves(g: GraphBuilder, u: str, curves: str) -> tuple[str, str]:
    """Piecewise-linear inner-lip curves v = top(u), bot(u) as sums of clipped ramps."""
    n = spec.CURVE_SEGMENTS
    v0 = g.reshape(g.slice1(curves, 0, 1, 1), [2, 1, 1, 1])
    knots = g.reshape(g.slice1(curves, 1, 1 + n, 1), [2, 1, 1, n])
    inv = g.reshape(g.slice1(curves, 1 + n, 1 + 2 * n, 1), [2, 1, 1, n])
    dv = g.reshape(g.slice1(curves, 1 + 2 * n, 1 + 3 * n, 1), [2, 1, 1, n])
    u_last = g.op("Unsqueeze", g.op("Squeeze", u, g.const([0], np.int64)), g.const([3], np.int64))  # [1,h,w,1]
    ramps = g.clip01(g.mul(g.sub(u_last, knots), inv))  # [2,h,w,n]
    both = g.add(g.op("ReduceSum", g.mul(ramps, dv), g.const([3], np.int64), keepdims=0), g.op("Squeeze", v0, g.const([3], np.int64)))
    top = g.op("Unsqueeze", g.gather(both, 0), g.const([0], np.int64))
    bot = g.op("Unsqueeze", g.gather(both, 1), g.const([0], np.int64))
    return top, bot  # [1,1,h,w]


def paste_delta(g: GraphBuilder, delta: str, roi: str, full_hw: str) -> str:
    """Zero-pad an ROI-sized [1,C,h,w] tensor back to the full crop."""
    start = g.slice1(roi, 0, 2, 0)
    end_pad = g.sub(full_hw, g.slice1(roi, 2, 4, 0))
    zeros2 = g.const([0, 0], np.int64)
    pads = g.op("Concat", zeros2, start, zeros2, end_pad, axis=0)
    return g.op("Pad", delta, pads)


def colour(g: GraphBuilder, palette: str, index: int) -> str:
    return g.reshape(g.gather(palette, index), [1, 3, 1, 1])


def band_layer(g: GraphBuilder, image: str, name: str, full_hw: str) -> str:
    """Paint the band between two curves (source mouth opening, closing eyelid) with a vertical
    colour gradient and a dark line (lip seam, lash line) at a fraction of its height."""
    roi, params, colours = f"{name}_roi", f"{name}_params", f"{name}_colours"
    u, v = roi_coordinates(g, roi, f"{name}_affine")
    top, bot = lip_curves(g, u, f"{name}_curves")
    prm = dict(zip(spec.BAND_PARAMS, g.split(params, len(spec.BAND_PARAMS))))
    grow_top = g.div(g.add(g.sub(v, top), prm["grow_top_px"]), prm["feather_top_px"])
    inside = g.mul(g.clip01(grow_top), g.clip01(g.add(g.sub(bot, v), prm["grow_bottom_px"])))
    height = g.sub(bot, top)
    alpha = g.mul(g.mul(inside, g.clip01(g.sub(height, prm["min_height_px"]))), prm["strength"])
    ends_fade = g.clip01(g.div(g.sub(g.const(1.0), g.op("Abs", u)), prm["end_fade_u"]))
    alpha = g.mul(alpha, ends_fade)
    line_at = g.add(top, g.mul(height, prm["line_fraction"]))
    t = g.smoothstep(g.div(g.sub(v, top), g.op("Max", height, g.const(0.5))))
    col = g.lerp(colour(g, colours, 0), colour(g, colours, 1), t)
    bump = g.mul(g.mul(t, g.sub(g.const(1.0), t)), g.mul(prm["highlight"], g.const(4.0)))
    col = g.mul(col, g.add(g.const(1.0), bump))
    line_d = g.div(g.sub(v, line_at), prm["line_width_px"])
    line = g.mul(g.mul(g.op("Exp", g.op("Neg", g.mul(line_d, line_d))), prm["line_strength"]), ends_fade)
    col = g.lerp(col, colour(g, colours, 2), line)
    starts = g.slice1(roi, 0, 2, 0)
    ends = g.slice1(roi, 2, 4, 0)
    patch = g.op("Slice", image, starts, ends, g.const([2, 3], np.int64))
    return g.add(image, paste_delta(g, g.mul(g.sub(col, patch), alpha), roi, full_hw))


def coarse_field(g: GraphBuilder) -> str:
    """Step 2: TPS displacement (pixels) on the coarse grid, windowed: [1, 2, gh, gw].

    Squared distances come from one matmul of augmented coordinates, [x, y, |x|^2, 1] against
    [-2c, 1, |c|^2]; the kernel is r^2 log r^2 (the TPS kernel up to a factor the weights absorb).
    """
    d2 = g.op("Max", g.op("MatMul", "grid_aug", "centres_aug"), g.const(spec.KERNEL_FLOOR))  # [G,K]
    kernel = g.mul(d2, g.op("Log", d2))
    disp = g.add(g.op("MatMul", kernel, "weights"), g.op("MatMul", g.slice1("grid_aug", 0, 2, 1), g.slice1("affine", 1, 3, 0)))
    disp = g.add(disp, g.slice1("affine", 0, 1, 0))
    coarse = g.op("Transpose", g.op("Reshape", disp, "coarse_shape"), perm=[0, 3, 1, 2])  # [1,2,gh,gw]
    return g.mul(coarse, "grid_window")


def tooth_gaps(g: GraphBuilder, u: str, half_w: str, edges: tuple[float, ...], width_px: float) -> str:
    """Darkness 0..1 of the gaps between teeth: a narrow Gaussian at each tooth boundary."""
    u_px = g.mul(g.op("Unsqueeze", u, g.const([4], np.int64)), half_w)  # [1,1,h,w,1]
    edges_px = g.mul(g.const(list(edges)), half_w)
    dist = g.op("ReduceMin", g.op("Abs", g.sub(u_px, edges_px)), g.const([4], np.int64), keepdims=0)
    scaled = g.mul(dist, g.const(1.0 / width_px))
    return g.op("Exp", g.op("Neg", g.mul(scaled, scaled)))


def mouth_interior(g: GraphBuilder, warped: str, full_hw: str) -> str:
    """Step 4: cavity, tongue, lower and upper teeth inside the target inner-lip contour."""
    roi, palette = "mouth_roi", "palette"
    prm = g.split("interior", spec.INTERIOR_LEN)
    u, v = roi_coordinates(g, roi, "mouth_affine")
    top, bot = lip_curves(g, u, "mouth_curves")
    half_w = prm[spec.HALF_WIDTH_PX]
    height = g.op("Relu", g.sub(bot, top))
    below_top = g.sub(v, top)
    above_bot = g.sub(bot, v)
    alpha = g.mul(g.clip01(g.add(below_top, g.const(0.5))), g.clip01(g.add(above_bot, g.const(0.5))))
    alpha = g.mul(alpha, prm[spec.OPEN_STRENGTH])
    alpha = g.mul(alpha, g.clip01(g.mul(g.sub(g.const(1.0), g.op("Abs", u)), half_w)))
    uu = g.mul(u, u)
    # cavity: darker towards the back (the centre of the opening), scaled by how open it is
    vn = g.div(below_top, g.op("Max", height, g.const(0.5)))
    du = g.mul(uu, g.const(1.0 / 0.45))
    dvn = g.mul(g.sub(vn, g.const(0.55)), g.const(1.0 / 0.5))
    depth = g.op("Exp", g.op("Neg", g.add(du, g.mul(dvn, dvn))))
    depth = g.mul(depth, g.clip01(g.div(height, prm[spec.DEPTH_PX])))
    col = g.lerp(colour(g, palette, spec.CAVITY), colour(g, palette, spec.CAVITY_DEEP), depth)
    # tongue: a soft ellipse resting on the lower lip, lighter towards the front
    tongue_h = g.op("Max", prm[spec.TONGUE_PX], g.const(0.5))
    ty = g.div(above_bot, tongue_h)
    ell = g.add(g.mul(uu, g.const(1.0 / 0.36)), g.mul(ty, ty))
    a_tongue = g.mul(g.clip01(g.mul(g.sub(g.const(1.0), ell), g.const(3.0))), prm[spec.TONGUE_VIS])
    tongue = g.mul(colour(g, palette, spec.TONGUE), g.add(g.const(0.7), g.mul(g.clip01(g.sub(g.const(1.0), ty)), g.const(0.3))))
    col = g.lerp(col, tongue, a_tongue)
    # lower teeth: a low band above the lower lip, in the shadow of the upper ones
    side_l = g.clip01(g.mul(g.sub(g.const(0.62), g.op("Abs", u)), g.const(1 / 0.12)))
    arch_l = g.op("Sqrt", g.clip01(g.sub(g.const(1.0), g.mul(uu, g.const(1 / 0.49)))))
    edge_l = g.sub(bot, g.mul(prm[spec.TEETH_LOWER_PX], arch_l))
    gaps_l = tooth_gaps(g, u, half_w, spec.LOWER_TOOTH_EDGES, 0.5)
    a_lower = g.mul(g.mul(g.clip01(g.add(g.sub(v, edge_l), g.const(0.5))), side_l), g.clip01(prm[spec.TEETH_LOWER_PX]))
    lower_shade = g.mul(g.sub(g.const(0.66), g.mul(uu, g.const(0.5))), g.sub(g.const(1.0), g.mul(gaps_l, g.const(0.25))))
    col = g.lerp(col, g.mul(colour(g, palette, spec.TEETH), lower_shade), a_lower)
    # upper teeth: a band hanging from the upper lip, shaded to the sides, with notched gaps
    side_u = g.clip01(g.mul(g.sub(g.const(0.84), g.op("Abs", u)), g.const(1 / 0.2)))
    arch_u = g.op("Sqrt", g.clip01(g.sub(g.const(1.0), g.mul(uu, g.const(1 / 0.8)))))
    gaps_u = tooth_gaps(g, u, half_w, spec.UPPER_TOOTH_EDGES, 0.55)
    edge_u = g.sub(g.add(top, g.mul(prm[spec.TEETH_UPPER_PX], arch_u)), gaps_u)
    a_upper = g.mul(g.clip01(g.add(g.sub(edge_u, v), g.const(0.5))), side_u)
    a_upper = g.mul(a_upper, g.clip01(prm[spec.TEETH_UPPER_PX]))
    lip_shadow = g.op("Exp", g.op("Neg", g.mul(g.op("Relu", below_top), g.const(1 / 1.6))))
    upper_shade = g.mul(g.sub(g.const(1.0), g.mul(uu, g.const(0.75))), g.sub(g.const(1.0), g.mul(gaps_u, g.const(0.28))))
    upper_shade = g.mul(upper_shade, g.sub(g.const(1.0), g.mul(lip_shadow, g.const(0.4))))
    col = g.lerp(col, g.mul(colour(g, palette, spec.TEETH), upper_shade), a_upper)
    starts, ends = g.slice1(roi, 0, 2, 0), g.slice1(roi, 2, 4, 0)
    patch = g.op("Slice", warped, starts, ends, g.const([2, 3], np.int64))
    return g.add(warped, paste_delta(g, g.mul(g.sub(col, patch), alpha), roi, full_hw))


def coarse_mask(g: GraphBuilder, coarse: str) -> str:
    """Step 5: feathered alpha where the crop changed (field magnitude, soft ellipses around the
    mouth and eyes), on the coarse grid: [1, 1, gh, gw]."""
    mag = g.op("Sqrt", g.op("ReduceSum", g.mul(coarse, coarse), g.const([1], np.int64), keepdims=1))
    moved = g.smoothstep(g.mul(g.sub(mag, g.const(0.1)), g.const(2.0)))
    e = "mask_ellipses"  # [E, 7]: cx, cy, m00, m01, m10, m11, strength (normalised coordinates)
    grid_xy = g.op("Unsqueeze", g.slice1("grid_aug", 0, 2, 1), g.const([0], np.int64))
    rel = g.sub(grid_xy, g.op("Unsqueeze", g.slice1(e, 0, 2, 1), g.const([1], np.int64)))
    m = g.reshape(g.slice1(e, 2, 6, 1), [-1, 2, 2])  # [E,2,2]
    r = g.op("MatMul", rel, g.op("Transpose", m, perm=[0, 2, 1]))  # [E,G,2]
    r2 = g.op("ReduceSum", g.mul(r, r), g.const([2], np.int64), keepdims=0)  # [E,G]
    strength = g.slice1(e, 6, 7, 1)  # [E,1]
    soft = g.op("ReduceMax", g.mul(g.smoothstep(g.mul(g.sub(g.const(1.0), r2), g.const(2.0))), strength),
                g.const([0], np.int64), keepdims=0)
    shape1 = g.op("Concat", g.const([1, 1], np.int64), g.slice1("coarse_shape", 1, 3, 0), axis=0)
    soft = g.op("Reshape", soft, shape1)
    mask = g.mul(g.op("Max", moved, soft), "grid_window")
    mask = g.op("AveragePool", mask, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    return g.mul(mask, "grid_window")


def build_graph() -> onnx.ModelProto:
    g = GraphBuilder()
    src = g.op("Transpose", g.op("Cast", "source", to=FLOAT), perm=[0, 3, 1, 2])  # [1,3,H,W]
    full_hw = g.slice1(g.op("Shape", src), 2, 4, 0)
    src = g.branch("fill_active", lambda b: band_layer(b, src, "fill", full_hw), src)
    coarse = coarse_field(g)
    # one bilinear upsampling for the field (scaled to GridSample units) and the mask
    both = g.op("Concat", g.mul(coarse, "grid_scale"), coarse_mask(g, coarse), axis=1)  # [1,3,gh,gw]
    sizes = g.op("Concat", g.const([1, 3], np.int64), full_hw, axis=0)
    both = g.op("Resize", both, "", "", sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    field = g.slice1(both, 0, 2, 1)
    g.op("Reshape", g.slice1(both, 2, 3, 1), g.op("Concat", g.const([1], np.int64), full_hw, axis=0), name="mask")
    grid = g.add("base_grid", g.op("Transpose", field, perm=[0, 2, 3, 1]))
    warped = g.op("GridSample", src, grid, mode="bilinear", padding_mode="zeros", align_corners=0)
    out = g.branch("mouth_active", lambda b: mouth_interior(b, warped, full_hw), warped)
    out = g.branch("lids_active", lambda b: band_layer(b, band_layer(b, out, "lid_r", full_hw), "lid_l", full_hw), out)
    out = g.op("Clip", g.add(out, g.const(0.5)), g.const(0.0), g.const(255.0))
    g.op("Transpose", g.op("Cast", out, to=TensorProto.UINT8), perm=[0, 2, 3, 1], name="frame")

    f = helper.make_tensor_value_info
    inputs = [
        f("source", TensorProto.UINT8, [1, "H", "W", 3]),
        *[f(flag, TensorProto.BOOL, []) for flag in ("fill_active", "mouth_active", "lids_active")],
        f("centres_aug", FLOAT, [4, "K"]), f("weights", FLOAT, ["K", 2]), f("affine", FLOAT, [3, 2]),
        f("grid_aug", FLOAT, ["G", 4]), f("grid_window", FLOAT, [1, 1, "gh", "gw"]),
        f("coarse_shape", INT64, [4]), f("base_grid", FLOAT, [1, "H", "W", 2]), f("grid_scale", FLOAT, [1, 2, 1, 1]),
        f("mask_ellipses", FLOAT, ["E", 7]),
        *[info for band in spec.BANDS for info in (
            f(f"{band}_roi", INT64, [4]), f(f"{band}_affine", FLOAT, [2, 3]),
            f(f"{band}_curves", FLOAT, [2, 1 + 3 * spec.CURVE_SEGMENTS]),
            f(f"{band}_params", FLOAT, [len(spec.BAND_PARAMS)]), f(f"{band}_colours", FLOAT, [3, 3]))],
        f("mouth_roi", INT64, [4]), f("mouth_affine", FLOAT, [2, 3]),
        f("mouth_curves", FLOAT, [2, 1 + 3 * spec.CURVE_SEGMENTS]), f("interior", FLOAT, [spec.INTERIOR_LEN]),
        f("palette", FLOAT, [spec.PALETTE_ROWS, 3]),
    ]
    outputs = [f("frame", TensorProto.UINT8, [1, "H", "W", 3]), f("mask", FLOAT, [1, "H", "W"])]
    graph = helper.make_graph(g.nodes, "lipsyncd_generator", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lipsyncd")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model version directory, e.g. model_repository/generator/1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / spec.GRAPH_FILE
    onnx.save(build_graph(), path)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()

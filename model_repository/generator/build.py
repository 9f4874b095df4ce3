"""Builds the generator's ONNX graphs (opset 18) with onnx.helper: `1/source.onnx`, `1/generator.onnx`.

A small source graph (`1/source.onnx`) runs once per source: (1) paint its open mouth shut
with lip colour (so a closing warp never drags a dark cavity along). The frame graph
(`1/generator.onnx`) renders a batch of T frames of that prepared source: (2) evaluate each
frame's thin-plate-spline backward field (Bookstein 1989) on a coarse grid, window it to zero
at the crop border and upsample it, (3) blinks: stretch the upper-lid skin down over the eye
inside the field (an occluding lid with its own lash line, shaded at its edge), (4) warp with
GridSample, (5) composite the synthesized mouth interior (cavity, teeth, tongue) inside the
target inner-lip contour, (6) emit the frames and feathered paste masks. Layers draw in
absolute pixel coordinates, so a frame renders bit-identically alone or inside a batch.
The same file runs on ONNX Runtime (CPU) and converts to a TensorRT engine on GPU nodes.

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
LID_SMOOTH_TAPS = 11  # pixels along the eye that a closed lid's stretched skin is averaged over
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class GraphBuilder:
    """Tiny SSA helper over onnx.helper: every op returns the name of its (first) output.

    A child builder (`branch`) collects the nodes of an If subgraph; names stay unique and
    constants live in the root graph (subgraphs may read outer-scope values)."""

    def __init__(self, parent: GraphBuilder | None = None) -> None:
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

    def branch(self, condition: str, then: Callable[[GraphBuilder], str],
               otherwise: str | Callable[[GraphBuilder], str]) -> str:
        """If(condition) then `then(child)` else `otherwise` (a value or a body): skipped layers cost nothing."""
        results = []
        other = otherwise if callable(otherwise) else (lambda child: child.op("Identity", otherwise))
        for body in (then, other):
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
    """(u, v) of every ROI pixel centre, [B,1,h,w], through B affines [B,2,3] of absolute pixels."""
    start, end = g.slice1(roi, 0, 2, 0), g.slice1(roi, 2, 4, 0)
    one = g.const(1, np.int64)
    ys = g.op("Cast", g.op("Range", g.gather(start, 0), g.gather(end, 0), one), to=FLOAT)
    xs = g.op("Cast", g.op("Range", g.gather(start, 1), g.gather(end, 1), one), to=FLOAT)
    half = g.const(0.5)
    ys = g.reshape(g.add(ys, half), [1, 1, -1, 1])
    xs = g.reshape(g.add(xs, half), [1, 1, 1, -1])
    a = [g.reshape(part, [-1, 1, 1, 1]) for part in g.op_multi("Split", g.reshape(affine, [-1, 6]), outputs=6, axis=1, num_outputs=6)]
    return g.add(g.add(g.mul(xs, a[0]), g.mul(ys, a[1])), a[2]), g.add(g.add(g.mul(xs, a[3]), g.mul(ys, a[4])), a[5])


def curve_pair(g: GraphBuilder, u: str, table: str, axis: int, lead: list[int]) -> tuple[str, str]:
    """Piecewise-linear curves v = first(u), second(u) as sums of clipped ramps.

    `table` holds two rows (on `axis`) of v0, knots, inverse spans and rises; `lead` reshapes a
    row's leading dimensions so that it broadcasts against the rank-4 `u`."""
    n = spec.CURVE_SEGMENTS
    u5 = g.op("Unsqueeze", u, g.const([4], np.int64))
    curves = []
    for row in (0, 1):
        tab = g.gather(table, row, axis=axis)
        last = -1
        v0 = g.reshape(g.slice1(tab, 0, 1, last), lead + [1, 1, 1])
        knots, inv, dv = (g.reshape(g.slice1(tab, 1 + k * n, 1 + (k + 1) * n, last), lead + [1, 1, 1, n]) for k in range(3))
        ramps = g.clip01(g.mul(g.sub(u5, knots), inv))
        curves.append(g.add(g.op("ReduceSum", g.mul(ramps, dv), g.const([4], np.int64), keepdims=0), v0))
    return curves[0], curves[1]


def paste_delta(g: GraphBuilder, delta: str, roi: str, full_hw: str, channels_last: bool = False) -> str:
    """Zero-pad an ROI-sized [N,C,h,w] (or [N,h,w,C]) tensor back to the full crop."""
    start = g.slice1(roi, 0, 2, 0)
    end_pad = g.sub(full_hw, g.slice1(roi, 2, 4, 0))
    zero, zeros2 = g.const([0], np.int64), g.const([0, 0], np.int64)
    if channels_last:
        pads = g.op("Concat", zero, start, zero, zero, end_pad, zero, axis=0)
    else:
        pads = g.op("Concat", zeros2, start, zeros2, end_pad, axis=0)
    return g.op("Pad", delta, pads)


def roi_patch(g: GraphBuilder, image: str, roi: str, axes: tuple[int, int] = (2, 3)) -> str:
    return g.op("Slice", image, g.slice1(roi, 0, 2, 0), g.slice1(roi, 2, 4, 0), g.const(list(axes), np.int64))


def colour(g: GraphBuilder, palette: str, index: int) -> str:
    return g.reshape(g.gather(palette, index), [1, 3, 1, 1])


def band_layer(g: GraphBuilder, image: str, name: str, full_hw: str) -> str:
    """Paint the band between two curves (the source's mouth opening) with a vertical colour
    gradient and a dark line (the lip seam) at a fraction of its height."""
    roi, params, colours = f"{name}_roi", f"{name}_params", f"{name}_colours"
    u, v = roi_coordinates(g, roi, f"{name}_affine")
    top, bot = curve_pair(g, u, f"{name}_curves", 1, [-1])
    prm = dict(zip(spec.BAND_PARAMS, g.split(params, len(spec.BAND_PARAMS)), strict=True))
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
    patch = roi_patch(g, image, roi)
    return g.add(image, paste_delta(g, g.mul(g.sub(col, patch), alpha), roi, full_hw))


def coarse_field(g: GraphBuilder) -> str:
    """Step 2: TPS displacements (pixels) on the coarse grid, windowed: [T, 2, gh, gw].

    Squared distances come from one matmul of augmented coordinates, [x, y, |x|^2, 1] against
    [-2c, 1, |c|^2]; the kernel is r^2 log r^2 (the TPS kernel up to a factor the weights absorb).
    """
    d2 = g.op("Max", g.op("MatMul", "grid_aug", "centres_aug"), g.const(spec.KERNEL_FLOOR))  # [T,G,K]
    kernel = g.mul(d2, g.op("Log", d2))
    linear = g.op("MatMul", g.slice1("grid_aug", 0, 2, 1), g.slice1("affine", 1, 3, 1))  # [T,G,2]
    disp = g.add(g.add(g.op("MatMul", kernel, "weights"), linear), g.slice1("affine", 0, 1, 1))
    coarse = g.op("Transpose", g.op("Reshape", disp, "coarse_shape"), perm=[0, 3, 1, 2])  # [T,2,gh,gw]
    return g.mul(coarse, "grid_window")


def eyelids(g: GraphBuilder, grid: str, source: str, full_hw: str) -> str:
    """Step 3+4 with blinks: each upper lid comes down as skin. A target pixel whose sample point
    (source pixels) lies between the skin line above the lid and the closing lid line samples
    instead, stretched, the skin above the lid margin; the last `lash` pixels sample the source
    lash line unstretched (one lash line at the lid edge); below the edge the eye shows, darkened
    by the lid's shadow. Everything is a function of the sample point, so head motion carries it."""
    roi = "eye_roi"
    g_roi = roi_patch(g, grid, roi, axes=(1, 2))  # [T,h,w,2], normalised
    to_px = g.reshape("grid_scale", [1, 1, 1, 2])
    px, py = g.op_multi("Split", g.div(g.add(g_roi, g.const(1.0)), to_px), outputs=2, axis=3, num_outputs=2)
    blink = g.reshape("blink", [-1, 1, 1, 1])
    active = g.op("Cast", g.op("Greater", blink, g.const(0.0)), to=FLOAT)
    visible = g.mul(g.clip01(g.mul(blink, g.const(1.0 / 0.15))), active)
    zero, one = g.const(0.0), g.const(1.0)
    dx, dy, shade, smooth = zero, zero, zero, zero
    for eye in range(spec.EYES):
        a = g.split(g.reshape(g.gather("eye_affine", eye), [6]), 6)
        u = g.add(g.add(g.mul(px, a[0]), g.mul(py, a[1])), a[2])  # [T,h,w,1]
        v = g.add(g.add(g.mul(px, a[3]), g.mul(py, a[4])), a[5])
        upper, closed = curve_pair(g, u, g.gather("eye_curves", eye), 0, [1])
        prm = g.split(g.gather("eye_params", eye), spec.EYE_PARAMS_LEN)
        lid, lash_src = prm[spec.LID_HEIGHT_PX], prm[spec.LASH_PX]
        lash = g.lerp(lash_src, prm[spec.LASH_CLOSED_PX], blink)  # lashes foreshorten as the lid closes
        close = g.add(upper, g.mul(g.sub(closed, upper), blink))
        top = g.sub(upper, lid)
        edge = g.sub(v, close)
        lash_top = g.sub(close, lash)
        # stretched lid skin: sampled densest from high on the lid, sparsest near the lash tips
        x = g.clip01(g.div(g.sub(v, top), g.op("Max", g.sub(lash_top, top), g.const(0.5))))
        skin = g.add(top, g.mul(g.sub(lid, lash_src), g.lerp(x, g.mul(x, x), g.clip01(g.mul(blink, g.const(2.0))))))
        lashes = g.add(g.sub(upper, lash_src), g.mul(g.sub(v, lash_top), g.div(lash_src, lash)))
        after = g.add(upper, g.mul(g.sub(v, upper), edge))  # one pixel of anti-aliasing below the edge
        s = g.op("Where", g.op("Less", edge, g.op("Neg", lash)), skin, lashes)
        s = g.op("Where", g.op("Less", edge, zero), s, g.op("Where", g.op("Less", edge, one), after, v))
        ends = g.clip01(g.mul(g.sub(one, g.op("Abs", u)), g.const(8.0)))
        support = g.mul(g.mul(g.op("Cast", g.op("GreaterOrEqual", v, top), to=FLOAT), ends), active)
        dv = g.mul(g.sub(s, v), support)
        dx, dy = g.add(dx, g.mul(dv, a[3])), g.add(dy, g.mul(dv, a[4]))
        # shading: the last three lash widths of the lid darken, the eye below the edge is in shadow
        lash3 = g.mul(lash, g.const(3.0))
        rim = g.mul(g.clip01(g.div(g.add(edge, lash3), lash3)), g.op("Cast", g.op("Less", edge, zero), to=FLOAT))
        cast = g.mul(g.clip01(g.sub(one, g.div(edge, g.mul(lash, g.const(2.0))))), g.op("Cast", g.op("GreaterOrEqual", edge, zero), to=FLOAT))
        amount = g.add(g.mul(rim, prm[spec.EDGE_SHADE]), g.mul(cast, prm[spec.CAST_SHADOW]))
        shade = g.add(shade, g.mul(g.mul(amount, support), visible))
        # the stretched skin repeats each column's few source rows: smoothed along the eye it
        # reads as lid skin instead of vertical streaks (ramped in below the fold, off at the lashes)
        stretched = g.mul(g.op("Cast", g.op("Less", edge, g.op("Neg", lash)), to=FLOAT), g.smoothstep(g.mul(x, g.const(4.0))))
        smooth = g.add(smooth, g.mul(g.mul(stretched, support), g.mul(blink, active)))
    scale = g.reshape("grid_scale", [2])
    sx, sy = g.split(scale, 2)
    delta = g.op("Concat", g.mul(dx, sx), g.mul(dy, sy), axis=3)  # [T,h,w,2]
    warped = g.op("GridSample", source, g.add(grid, paste_delta(g, delta, roi, full_hw, channels_last=True)),
                  mode="bilinear", padding_mode="zeros", align_corners=0)
    shade = g.op("Transpose", shade, perm=[0, 3, 1, 2])  # [T,1,h,w]
    smooth = g.op("Transpose", g.clip01(smooth), perm=[0, 3, 1, 2])
    patch = roi_patch(g, warped, roi)
    along = g.op("AveragePool", patch, kernel_shape=[1, LID_SMOOTH_TAPS], pads=[0, LID_SMOOTH_TAPS // 2] * 2,
                 count_include_pad=0)
    lid = g.lerp(patch, along, smooth)
    return g.add(warped, paste_delta(g, g.sub(g.mul(lid, g.sub(g.const(1.0), shade)), patch), roi, full_hw))


def tooth_gaps(g: GraphBuilder, u_px: str, edges: tuple[float, ...], half_w: str, width_px: float) -> str:
    """Darkness 0..1 of the gaps between teeth: a narrow Gaussian at each tooth boundary."""
    edges_px = g.mul(g.const(list(edges)), g.op("Unsqueeze", half_w, g.const([4], np.int64)))
    u5 = g.op("Unsqueeze", u_px, g.const([4], np.int64))  # [T,1,h,w,1]
    dist = g.op("ReduceMin", g.op("Abs", g.sub(u5, edges_px)), g.const([4], np.int64), keepdims=0)
    scaled = g.mul(dist, g.const(1.0 / width_px))
    return g.op("Exp", g.op("Neg", g.mul(scaled, scaled)))


def mouth_interior(g: GraphBuilder, warped: str, full_hw: str) -> str:
    """Step 5: cavity, tongue, lower and upper teeth inside the target inner-lip contour."""
    roi, palette = "mouth_roi", "palette"
    prm = [g.reshape(p, [-1, 1, 1, 1]) for p in g.op_multi("Split", "interior", outputs=spec.INTERIOR_LEN, axis=1,
                                                             num_outputs=spec.INTERIOR_LEN)]
    u, v = roi_coordinates(g, roi, "mouth_affine")
    top, bot = curve_pair(g, u, "mouth_curves", 1, [-1])
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
    u_px = g.mul(u, half_w)
    # lower teeth: a low band above the lower lip, in the shadow of the upper ones
    side_l = g.clip01(g.mul(g.sub(g.const(0.62), g.op("Abs", u)), g.const(1 / 0.12)))
    arch_l = g.op("Sqrt", g.clip01(g.sub(g.const(1.0), g.mul(uu, g.const(1 / 0.49)))))
    edge_l = g.sub(bot, g.mul(prm[spec.TEETH_LOWER_PX], arch_l))
    gaps_l = tooth_gaps(g, u_px, spec.LOWER_TOOTH_EDGES, half_w, 0.5)
    a_lower = g.mul(g.mul(g.clip01(g.add(g.sub(v, edge_l), g.const(0.5))), side_l), g.clip01(prm[spec.TEETH_LOWER_PX]))
    lower_shade = g.mul(g.sub(g.const(0.62), g.mul(uu, g.const(0.5))), g.sub(g.const(1.0), g.mul(gaps_l, g.const(0.3))))
    col = g.lerp(col, g.lerp(colour(g, palette, spec.TEETH_SHADOW), colour(g, palette, spec.TEETH), lower_shade), a_lower)
    # upper teeth: a band hanging from the upper lip, shaded to the sides (the arch turns away),
    # darker at the gum line and in the lip's shadow, with notched gaps and slightly uneven teeth
    side_u = g.clip01(g.mul(g.sub(g.const(0.84), g.op("Abs", u)), g.const(1 / 0.2)))
    arch_u = g.op("Sqrt", g.clip01(g.sub(g.const(1.0), g.mul(uu, g.const(1 / 0.8)))))
    gaps_u = tooth_gaps(g, u_px, spec.UPPER_TOOTH_EDGES, half_w, 0.6)
    teeth_px = g.mul(prm[spec.TEETH_UPPER_PX], arch_u)
    edge_u = g.sub(g.add(top, teeth_px), gaps_u)
    a_upper = g.mul(g.clip01(g.add(g.sub(edge_u, v), g.const(0.5))), side_u)
    a_upper = g.mul(a_upper, g.clip01(prm[spec.TEETH_UPPER_PX]))
    lip_shadow = g.op("Exp", g.op("Neg", g.mul(g.op("Relu", below_top), g.const(1 / 1.8))))
    down = g.clip01(g.div(below_top, g.op("Max", teeth_px, g.const(0.5))))  # 0 at the gum, 1 at the edge
    uneven = g.mul(g.op("Cos", g.mul(u, g.const(23.0))), g.const(0.035))
    upper_shade = g.mul(g.sub(g.const(1.0), g.mul(uu, g.const(0.8))), g.sub(g.const(1.0), g.mul(gaps_u, g.const(0.35))))
    upper_shade = g.mul(upper_shade, g.sub(g.const(1.0), g.mul(lip_shadow, g.const(0.45))))
    upper_shade = g.mul(upper_shade, g.add(g.const(0.9), g.add(g.mul(down, g.const(0.1)), uneven)))
    teeth_col = g.lerp(colour(g, palette, spec.TEETH_SHADOW), colour(g, palette, spec.TEETH), g.clip01(upper_shade))
    col = g.lerp(col, g.mul(teeth_col, g.op("Max", upper_shade, g.const(1.0))), a_upper)
    patch = roi_patch(g, warped, roi)
    return g.add(warped, paste_delta(g, g.mul(g.sub(col, patch), alpha), roi, full_hw))


def coarse_mask(g: GraphBuilder, coarse: str) -> str:
    """Step 6: feathered alpha where the crop changed (field magnitude, soft ellipses around the
    mouth and eyes), on the coarse grid: [T, 1, gh, gw]."""
    mag = g.op("Sqrt", g.op("ReduceSum", g.mul(coarse, coarse), g.const([1], np.int64), keepdims=1))
    moved = g.smoothstep(g.mul(g.sub(mag, g.const(0.1)), g.const(2.0)))
    e = "mask_ellipses"  # [T, E, 7]: cx, cy, m00, m01, m10, m11, strength (normalised coordinates)
    grid_xy = g.op("Unsqueeze", g.slice1("grid_aug", 0, 2, 1), g.const([0, 1], np.int64))  # [1,1,G,2]
    rel = g.sub(grid_xy, g.op("Unsqueeze", g.slice1(e, 0, 2, 2), g.const([2], np.int64)))  # [T,E,G,2]
    m = g.reshape(g.slice1(e, 2, 6, 2), [0, 0, 2, 2])  # [T,E,2,2]
    r = g.op("MatMul", rel, g.op("Transpose", m, perm=[0, 1, 3, 2]))
    r2 = g.op("ReduceSum", g.mul(r, r), g.const([3], np.int64), keepdims=0)  # [T,E,G]
    strength = g.slice1(e, 6, 7, 2)  # [T,E,1]
    soft = g.op("ReduceMax", g.mul(g.smoothstep(g.mul(g.sub(g.const(1.0), r2), g.const(2.0))), strength),
                g.const([1], np.int64), keepdims=0)  # [T,G]
    shape1 = g.op("Concat", g.slice1("coarse_shape", 0, 1, 0), g.const([1], np.int64), g.slice1("coarse_shape", 1, 3, 0), axis=0)
    soft = g.op("Reshape", soft, shape1)
    mask = g.mul(g.op("Max", moved, soft), "grid_window")
    mask = g.op("AveragePool", mask, kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)
    return g.mul(mask, "grid_window")


def _model(g: GraphBuilder, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lipsyncd")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def build_source_graph() -> onnx.ModelProto:
    """Step 1, once per source: uint8 [1,H,W,3] -> float [1,3,H,W] with the open mouth painted shut."""
    g = GraphBuilder()
    src = g.op("Transpose", g.op("Cast", "source", to=FLOAT), perm=[0, 3, 1, 2])
    full_hw = g.slice1(g.op("Shape", src), 2, 4, 0)
    g.op("Identity", g.branch("fill_active", lambda b: band_layer(b, src, "fill", full_hw), src), name="prepared")
    f = helper.make_tensor_value_info
    curve = 1 + 3 * spec.CURVE_SEGMENTS
    inputs = [f("source", TensorProto.UINT8, [1, "H", "W", 3]), f("fill_active", TensorProto.BOOL, []),
              f("fill_roi", INT64, [4]), f("fill_affine", FLOAT, [1, 2, 3]), f("fill_curves", FLOAT, [1, 2, curve]),
              f("fill_params", FLOAT, [len(spec.BAND_PARAMS)]), f("fill_colours", FLOAT, [3, 3])]
    return _model(g, "lipsyncd_generator_source", inputs, [f("prepared", FLOAT, [1, 3, "H", "W"])])


def build_graph() -> onnx.ModelProto:
    """Steps 2-6 for a batch of T frames of one prepared source."""
    g = GraphBuilder()
    src = "source"  # [1,3,H,W] float, from the source graph
    full_hw = g.slice1(g.op("Shape", src), 2, 4, 0)
    frames = g.slice1("coarse_shape", 0, 1, 0)
    src = g.op("Expand", src, g.op("Concat", frames, g.const([3], np.int64), full_hw, axis=0))  # [T,3,H,W]
    coarse = coarse_field(g)
    # one bilinear upsampling for the field (scaled to GridSample units) and the mask
    both = g.op("Concat", g.mul(coarse, "grid_scale"), coarse_mask(g, coarse), axis=1)  # [T,3,gh,gw]
    sizes = g.op("Concat", frames, g.const([3], np.int64), full_hw, axis=0)
    both = g.op("Resize", both, "", "", sizes, mode="linear", coordinate_transformation_mode="half_pixel")
    field = g.slice1(both, 0, 2, 1)
    g.op("Reshape", g.slice1(both, 2, 3, 1), g.op("Concat", frames, full_hw, axis=0), name="mask")
    grid = g.add("base_grid", g.op("Transpose", field, perm=[0, 2, 3, 1]))  # [T,H,W,2]
    warped = g.branch("lids_active", lambda b: eyelids(b, grid, src, full_hw),
                      lambda b: b.op("GridSample", src, grid, mode="bilinear", padding_mode="zeros", align_corners=0))
    out = g.branch("mouth_active", lambda b: mouth_interior(b, warped, full_hw), warped)
    out = g.op("Clip", g.add(out, g.const(0.5)), g.const(0.0), g.const(255.0))
    g.op("Transpose", g.op("Cast", out, to=TensorProto.UINT8), perm=[0, 2, 3, 1], name="frame")

    f = helper.make_tensor_value_info
    curve = 1 + 3 * spec.CURVE_SEGMENTS
    inputs = [
        f("source", FLOAT, [1, 3, "H", "W"]),
        *[f(flag, TensorProto.BOOL, []) for flag in ("lids_active", "mouth_active")],
        f("centres_aug", FLOAT, ["T", 4, "K"]), f("weights", FLOAT, ["T", "K", 2]), f("affine", FLOAT, ["T", 3, 2]),
        f("grid_aug", FLOAT, ["G", 4]), f("grid_window", FLOAT, [1, 1, "gh", "gw"]),
        f("coarse_shape", INT64, [4]), f("base_grid", FLOAT, [1, "H", "W", 2]), f("grid_scale", FLOAT, [1, 2, 1, 1]),
        f("mask_ellipses", FLOAT, ["T", "E", 7]),
        f("eye_roi", INT64, [4]), f("eye_affine", FLOAT, [spec.EYES, 2, 3]), f("eye_curves", FLOAT, [spec.EYES, 2, curve]),
        f("eye_params", FLOAT, [spec.EYES, spec.EYE_PARAMS_LEN]), f("blink", FLOAT, ["T"]),
        f("mouth_roi", INT64, [4]), f("mouth_affine", FLOAT, ["T", 2, 3]), f("mouth_curves", FLOAT, ["T", 2, curve]),
        f("interior", FLOAT, ["T", spec.INTERIOR_LEN]), f("palette", FLOAT, [spec.PALETTE_ROWS, 3]),
    ]
    outputs = [f("frame", TensorProto.UINT8, ["T", "H", "W", 3]), f("mask", FLOAT, ["T", "H", "W"])]
    return _model(g, "lipsyncd_generator", inputs, outputs)


def write_models(out_dir: Path) -> list[Path]:
    """Both graphs into a model version directory."""
    paths = [out_dir / spec.SOURCE_GRAPH_FILE, out_dir / spec.GRAPH_FILE]
    onnx.save(build_source_graph(), paths[0])
    onnx.save(build_graph(), paths[1])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="model version directory, e.g. model_repository/generator/1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in write_models(args.out):
        log.info("wrote %s", path)


if __name__ == "__main__":
    main()

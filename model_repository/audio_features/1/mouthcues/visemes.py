"""Phone → viseme table: the mouth target of each ARPABET phone and how strongly it holds it.

Each phone has a target vector over the seven shape parameters and per-parameter dominance
strengths in the sense of Cohen & Massaro (1993): a bilabial dominates lip closure, a "w"
dominates rounding, an "h" or "k" dominates almost nothing and borrows its neighbours' shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPE_PARAMS: tuple[str, ...] = (
    "jaw_open",
    "lip_open",
    "lip_width",
    "lip_round",
    "closure",
    "teeth",
    "tongue",
)
JAW, LIP_OPEN, LIP_WIDTH, LIP_ROUND, CLOSURE, TEETH, TONGUE = range(len(SHAPE_PARAMS))
N_SHAPE = len(SHAPE_PARAMS)

# Phones the acoustic model emits for non-speech; they pull the mouth to rest.
SILENCE_PHONES = frozenset({"SIL", "+NSN+", "+SPN+", "+BREATH+", "+COUGH+", "+UM+", "+SMACK+"})


@dataclass(frozen=True)
class Viseme:
    """Mouth target of one phone with its Cohen-Massaro dominance parameters."""

    target: np.ndarray  # [N_SHAPE] float
    strength: np.ndarray  # [N_SHAPE] dominance magnitude alpha per parameter
    rate_per_s: float  # dominance decay theta; larger = more local (less co-articulation)
    is_speech: bool = True


def _viseme(
    shape: tuple[float, float, float, float, float, float, float],
    strength: float,
    rate_per_s: float,
    strong: tuple[int, ...] = (),
    strong_factor: float = 4.0,
    is_speech: bool = True,
) -> Viseme:
    alpha = np.full(N_SHAPE, strength, dtype=np.float64)
    for index in strong:
        alpha[index] *= strong_factor
    return Viseme(np.asarray(shape, dtype=np.float64), alpha, rate_per_s, is_speech)


# (jaw, lip_open, width, round, closure, teeth, tongue)
_VOWEL_SHAPES: dict[str, tuple[float, float, float, float, float, float, float]] = {
    "AA": (0.75, 0.80, 0.10, 0.00, 0.0, 0.20, 0.10),
    "AE": (0.65, 0.70, 0.40, 0.00, 0.0, 0.45, 0.10),
    "AH": (0.50, 0.55, 0.05, 0.00, 0.0, 0.25, 0.05),
    "AO": (0.60, 0.60, -0.35, 0.50, 0.0, 0.10, 0.00),
    "AW": (0.65, 0.65, -0.20, 0.35, 0.0, 0.15, 0.00),
    "AY": (0.65, 0.65, 0.20, 0.00, 0.0, 0.30, 0.05),
    "EH": (0.50, 0.55, 0.40, 0.00, 0.0, 0.50, 0.10),
    "ER": (0.35, 0.35, -0.20, 0.35, 0.0, 0.30, 0.00),
    "EY": (0.40, 0.45, 0.55, 0.00, 0.0, 0.60, 0.10),
    "IH": (0.30, 0.35, 0.50, 0.00, 0.0, 0.60, 0.10),
    "IY": (0.20, 0.25, 0.80, 0.00, 0.0, 0.80, 0.05),
    "OW": (0.50, 0.45, -0.60, 0.75, 0.0, 0.05, 0.00),
    "OY": (0.50, 0.50, -0.40, 0.55, 0.0, 0.15, 0.00),
    "UH": (0.35, 0.30, -0.45, 0.60, 0.0, 0.10, 0.00),
    "UW": (0.25, 0.20, -0.80, 0.90, 0.0, 0.00, 0.00),
}

_CONSONANTS: dict[str, Viseme] = {
    # Bilabials: lips pressed; very dominant and local so short closures survive blending.
    **{
        phone: _viseme((0.08, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0), 1.5, 50.0, (JAW, LIP_OPEN, CLOSURE), 3.0)
        for phone in ("P", "B", "M")
    },
    # Labiodentals: upper teeth on the lower lip.
    **{
        phone: _viseme((0.12, 0.08, 0.10, 0.0, 0.0, 0.90, 0.0), 1.5, 30.0, (JAW, LIP_OPEN, TEETH), 3.0)
        for phone in ("F", "V")
    },
    **{
        phone: _viseme((0.20, 0.20, 0.10, 0.0, 0.0, 0.70, 0.90), 1.0, 28.0, (TONGUE, TEETH, JAW), 3.0)
        for phone in ("TH", "DH")
    },
    **{
        phone: _viseme((0.12, 0.12, 0.50, 0.0, 0.0, 0.95, 0.0), 1.2, 28.0, (TEETH, JAW, LIP_OPEN), 3.0)
        for phone in ("S", "Z")
    },
    **{
        phone: _viseme((0.15, 0.20, -0.40, 0.60, 0.0, 0.70, 0.0), 1.2, 25.0, (LIP_ROUND, TEETH, JAW), 2.5)
        for phone in ("SH", "ZH", "CH", "JH")
    },
    **{
        phone: _viseme((0.20, 0.22, 0.20, 0.0, 0.0, 0.55, 0.25), 0.8, 28.0, (TEETH, JAW, LIP_OPEN), 2.0)
        for phone in ("T", "D", "N")
    },
    "L": _viseme((0.30, 0.35, 0.10, 0.0, 0.0, 0.45, 0.75), 0.7, 20.0, (TONGUE,), 3.0),
    "R": _viseme((0.25, 0.25, -0.30, 0.45, 0.0, 0.30, 0.0), 0.8, 18.0, (LIP_ROUND,), 2.0),
    "W": _viseme((0.15, 0.12, -0.80, 0.95, 0.0, 0.0, 0.0), 1.0, 18.0, (LIP_ROUND, LIP_WIDTH), 3.0),
    "Y": _viseme((0.20, 0.20, 0.60, 0.0, 0.0, 0.60, 0.10), 0.8, 20.0, (LIP_WIDTH,), 2.0),
    **{
        phone: _viseme((0.30, 0.30, 0.10, 0.0, 0.0, 0.40, 0.0), 0.3, 20.0)
        for phone in ("K", "G", "NG")
    },
    "HH": _viseme((0.40, 0.45, 0.0, 0.0, 0.0, 0.20, 0.0), 0.15, 20.0),
}

REST = _viseme((0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 0.8, 14.0, is_speech=False)

VISEMES: dict[str, Viseme] = {
    **{phone: _viseme(shape, 1.0, 18.0) for phone, shape in _VOWEL_SHAPES.items()},
    **_CONSONANTS,
}

BILABIALS = frozenset({"P", "B", "M"})


def viseme_for(phone: str) -> Viseme:
    """The viseme of an ARPABET phone (stress digits ignored); unknown or noise phones rest."""
    key = phone.upper().rstrip("012")
    if key in SILENCE_PHONES:
        return REST
    return VISEMES.get(key, REST)

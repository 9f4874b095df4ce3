"""Which phones the mouth follows, piece by piece: word-aligned phones for believable English,
allphone decoding for everything else.

Long audio arrives already cut into ~30 s pieces at quiet moments, so each decoder only ever
holds one piece and memory stays flat in the audio length.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .phones import FRAME_RATE_HZ, SAMPLE_RATE_HZ, AllphoneDecoder, PhoneSegment
from .words import RecognizerSettings, WordAligner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhoneDecoding:
    """Timed phones of a whole audio and the spans whose phones are word-aligned (exact)."""

    segments: tuple[PhoneSegment, ...]
    aligned_spans_s: tuple[tuple[float, float], ...]

    def aligned_mask(self, n_frames: int, rate_hz: float) -> np.ndarray:
        """[n_frames] bool: frame i (at i / rate_hz s) lies in a word-aligned span."""
        mask = np.zeros(n_frames, dtype=bool)
        for start_s, end_s in self.aligned_spans_s:
            mask[max(int(round(start_s * rate_hz)), 0) : int(round(end_s * rate_hz))] = True
        return mask


class PhoneRecognizer:
    """Word recognition + forced alignment where the English recogniser is confident,
    allphone decoding elsewhere. Pass use_words=False for allphone only."""

    def __init__(self, use_words: bool = True, settings: RecognizerSettings = RecognizerSettings()) -> None:
        self._aligner = WordAligner(settings) if use_words else None
        self._allphone = AllphoneDecoder()

    def decode_pieces(self, audio: np.ndarray, cut_frames: list[int], activity: np.ndarray) -> PhoneDecoding:
        """Decode audio split at 10 ms frame indices cut_frames (first 0, last the end);
        activity is the voice activity per 10 ms frame of the whole audio."""
        hop = SAMPLE_RATE_HZ // FRAME_RATE_HZ
        segments: list[PhoneSegment] = []
        spans: list[tuple[float, float]] = []
        for first, last in zip(cut_frames[:-1], cut_frames[1:], strict=True):
            piece = audio[first * hop : last * hop]
            offset_s = first / FRAME_RATE_HZ
            if self._aligner is not None:
                result = self._aligner.align(piece, activity[first:last], offset_s)
                log.debug(
                    "piece at %.1f s: %d words, median posterior %.2f, coverage %.2f: %s",
                    offset_s, len(result.words), result.confidence, result.coverage,
                    "aligned" if result.aligned else "allphone",
                )
                if result.aligned:
                    segments.extend(result.phones)
                    spans.append((offset_s, last / FRAME_RATE_HZ))
                    continue
            segments.extend(self._allphone.decode(piece, offset_s=offset_s))
        return PhoneDecoding(tuple(segments), tuple(spans))

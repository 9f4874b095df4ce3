"""Timed phones with PocketSphinx allphone decoding (no transcript), and the phone type.

Allphone is the fallback for speech the English word recogniser does not believe (other
languages, noise): a phone-loop search with the en-us acoustic model and phone bigram LM
that ship with the `pocketsphinx` wheel. The decoder is built once per stage instance
(never at import) and is fed one bounded piece of audio at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # imported for real only when a decoder is built
    import pocketsphinx

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
FRAME_RATE_HZ = 100  # PocketSphinx frames per second
MIN_PIECE_S = 0.1


@dataclass(frozen=True)
class PhoneSegment:
    """One decoded phone; times in seconds from the start of the audio."""

    phone: str
    start_s: float
    end_s: float

    def describe(self) -> str:
        return f"{self.phone} {self.start_s:.2f} {self.end_s:.2f}"


@dataclass(frozen=True)
class DecoderSettings:
    """PocketSphinx search settings; beams at 1e-20 keep allphone ~15x faster than real time
    on one core without the search dying (1e-10 loses the path mid-utterance)."""

    language_weight: float = 2.0
    beam: float = 1e-20
    phone_beam: float = 1e-20


WARM_UP_PCM = (np.random.default_rng(0).standard_normal(SAMPLE_RATE_HZ) * 300).astype(np.int16).tobytes()


def fresh_start(decoder: pocketsphinx.Decoder) -> None:
    """Reset the feature front end before an utterance: PocketSphinx otherwise carries its
    state from one utterance into the next, so the same audio could come out as other phones
    after other requests. (A decoder's very first utterance differs from all later ones
    too; `warm_up` spends it on a second of quiet noise at start-up.)"""
    decoder.reinit_feat()


def warm_up(decoder: pocketsphinx.Decoder) -> None:
    decoder.start_utt()
    decoder.process_raw(WARM_UP_PCM, full_utt=True)
    decoder.end_utt()


def to_pcm16(audio: np.ndarray) -> bytes:
    """16-bit little-endian PCM bytes of float audio in [-1, 1], as PocketSphinx reads it."""
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16).tobytes()


class AllphoneDecoder:
    """Phone-loop decoder over the en-us acoustic model."""

    def __init__(self, settings: DecoderSettings = DecoderSettings()) -> None:
        import pocketsphinx  # heavy: imported when a decoder is actually built

        model_dir = pocketsphinx.get_model_path()
        self._decoder = pocketsphinx.Decoder(
            lm=None,
            hmm=os.path.join(model_dir, "en-us", "en-us"),
            allphone=os.path.join(model_dir, "en-us", "en-us-phone.lm.bin"),
            lw=settings.language_weight,
            beam=settings.beam,
            pbeam=settings.phone_beam,
            cmn="batch",  # each piece normalised by its own mean: the whole piece is at hand
            loglevel="FATAL",
        )
        warm_up(self._decoder)

    def decode(self, audio: np.ndarray, offset_s: float = 0.0) -> list[PhoneSegment]:
        """Phones of one piece of 16 kHz mono float audio, shifted by offset_s."""
        if audio.shape[0] < MIN_PIECE_S * SAMPLE_RATE_HZ:
            return []
        fresh_start(self._decoder)
        self._decoder.start_utt()
        self._decoder.process_raw(to_pcm16(audio), full_utt=True)
        self._decoder.end_utt()
        segments = [
            PhoneSegment(
                seg.word,
                offset_s + seg.start_frame / FRAME_RATE_HZ,
                offset_s + (seg.end_frame + 1) / FRAME_RATE_HZ,
            )
            for seg in self._decoder.seg()
        ]
        if not segments:
            log.debug("allphone search found no path for %.2f s of audio", audio.shape[0] / SAMPLE_RATE_HZ)
        return segments


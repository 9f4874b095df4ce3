"""Timed phones of speech from PocketSphinx 5 (CMU en-us models): the words are recognised,
then force-aligned to phones, which times bilabials far better than free phone decoding;
allphone mode (phone language model) is the fallback when no words are recognised."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import pocketsphinx

from tests.eval.sync import Phone

logger = logging.getLogger(__name__)

SPHINX_FRAME_S = 0.01  # one PocketSphinx feature frame
NON_PHONES = frozenset({"SIL", "<s>", "</s>", "<sil>", "+NSN+", "+SPN+", "[NOISE]"})


@dataclass(frozen=True)
class Transcript:
    phones: list[Phone]
    words: str
    method: str  # "aligned" or "allphone"


class PhoneRecognizer:
    """Builds its decoders on first use and reuses them for every utterance."""

    def __init__(self) -> None:
        self._allphone: pocketsphinx.Decoder | None = None

    def transcribe(self, samples_16k: np.ndarray, offset_s: float = 0.0) -> Transcript:
        """Phones of mono float32 16 kHz speech, times shifted by offset_s; silences dropped."""
        pcm = (np.clip(samples_16k, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        decoder = pocketsphinx.Decoder(loglevel="FATAL")  # fresh each time: alignment mode is sticky
        words = _recognise(decoder, pcm)
        if words:
            try:
                return Transcript(_align(decoder, pcm, words, offset_s), words, "aligned")
            except RuntimeError:
                logger.warning("forced alignment failed for %r; using allphone decoding", words)
        return Transcript(self._allphones(pcm, offset_s), words, "allphone")

    def _allphones(self, pcm: bytes, offset_s: float) -> list[Phone]:
        if self._allphone is None:
            models = pocketsphinx.get_model_path()
            self._allphone = pocketsphinx.Decoder(lm=None, loglevel="FATAL",
                                                  hmm=os.path.join(models, "en-us", "en-us"),
                                                  allphone=os.path.join(models, "en-us", "en-us-phone.lm.bin"))
        _decode(self._allphone, pcm)
        return [Phone(s.word, offset_s + s.start_frame * SPHINX_FRAME_S, offset_s + (s.end_frame + 1) * SPHINX_FRAME_S)
                for s in self._allphone.seg() if s.word not in NON_PHONES]


def _recognise(decoder: pocketsphinx.Decoder, pcm: bytes) -> str:
    _decode(decoder, pcm)
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.strip() if hypothesis is not None else ""


def _align(decoder: pocketsphinx.Decoder, pcm: bytes, words: str, offset_s: float) -> list[Phone]:
    """Two passes as PocketSphinx 5 wants: word alignment, then phone alignment."""
    decoder.set_align_text(words)
    _decode(decoder, pcm)
    decoder.set_alignment()
    _decode(decoder, pcm)
    alignment = decoder.get_alignment()
    if alignment is None:
        raise RuntimeError("no alignment")
    return [Phone(p.name, offset_s + p.start * SPHINX_FRAME_S, offset_s + (p.start + p.duration) * SPHINX_FRAME_S)
            for word in alignment for p in word if p.name not in NON_PHONES]


def _decode(decoder: pocketsphinx.Decoder, pcm: bytes) -> None:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()


def phone_at(phones: list[Phone], time_s: float) -> str:
    """The phone label spoken at time_s, or '' in silence."""
    for phone in phones:
        if phone.start_s <= time_s < phone.end_s:
            return phone.label
    return ""

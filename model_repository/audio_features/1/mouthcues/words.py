"""Exact phone timing for English speech: word recognition, then forced alignment to phones.

PocketSphinx 5 recognises words with the en-us acoustic model, the general en-us trigram LM
and the CMU pronouncing dictionary (all shipped in the wheel), scores each word by its
lattice posterior, and, when the words are believable, re-decodes the same audio in
state-alignment mode constrained to the recognised words and their pronunciations. Speech
the recogniser does not believe (another language, noise, mumbling) is left to the caller.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .phones import FRAME_RATE_HZ, MIN_PIECE_S, SAMPLE_RATE_HZ, PhoneSegment, fresh_start, to_pcm16, warm_up

log = logging.getLogger(__name__)

NON_WORDS = ("<s>", "</s>", "<sil>", "[", "+")  # sentence marks, silence, fillers
# Pieces end wherever the audio was quietest, sometimes inside speech; a little trailing
# silence lets the search end in </s> (otherwise the lattice can lack its final node and
# the whole piece comes back without words).
TAIL_SILENCE_S = 0.3
# Likewise a little leading silence lets it start in <s>: speech from the very first sample
# otherwise loses its first phone (talk_a's "my biggest..." was heard as "I'm biggest...",
# its first /m/ open), and the 13 English clips of the search's measurement lose words.
HEAD_SILENCE_S = 0.1
HEAD_FRAMES = round(HEAD_SILENCE_S * FRAME_RATE_HZ)


@dataclass(frozen=True)
class RecognizerSettings:
    """Word-search settings. Forward tree search only, histogram-pruned to 2500 active HMMs
    and 6 word exits per frame; the bestpath lattice supplies word posteriors for the
    confidence test. Against the full default search's words on 13 English clips (the
    speech clips, the two talking videos, PocketSphinx's test readings), this halves the
    word errors of 1000 HMMs / 5 exits (0.12 against 0.20) for about a quarter more CPU:
    search and alignment together ~7.7x faster than real time on one core of this CPU,
    against ~9.7x. The narrower search misheard talk_a's "my biggest weakness is asking for
    help" with confidence (posterior 0.78), losing the m, b and p closures; wider still
    (3000 / 10) cut the errors only to 0.11, for another tenth of CPU."""

    max_hmms_per_frame: int = 2500
    max_words_per_frame: int = 6
    # Real English speech scores a median word posterior of 0.8-1.0 with words covering
    # 0.9-1.0 of its voiced time; Mandarin forced into English words has a median posterior
    # ~0.3, and other languages or synthetic voices leave half or more of the voiced time
    # to fillers and silences.
    min_median_posterior: float = 0.6
    min_coverage: float = 0.7
    min_words: int = 2


SEARCH_PARAMETERS = ("max_hmms_per_frame", "max_words_per_frame")


def settings_from_parameters(parameters: Mapping[str, Any]) -> RecognizerSettings:
    """The word search's width from a Triton model configuration's `parameters` (config.pbtxt:
    each {"string_value": "<whole number >= 1>"}); absent ones keep the defaults. A bad value
    raises ValueError naming the parameter (the model then does not load)."""
    values: dict[str, int] = {}
    for name in SEARCH_PARAMETERS:
        if name not in parameters:
            continue
        text = str(parameters[name].get("string_value", "")).strip()
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"audio_features parameter {name} must be a whole number >= 1, got {text!r}")
        values[name] = int(text)
    return RecognizerSettings(**values)


@dataclass(frozen=True)
class RecognisedWord:
    """One recognised word; frames are 10 ms PocketSphinx frames, end exclusive."""

    word: str
    start_frame: int
    end_frame: int
    posterior: float


@dataclass(frozen=True)
class AlignedPiece:
    """Outcome of one piece: the words heard and, when believable, their timed phones."""

    words: tuple[RecognisedWord, ...]
    confidence: float  # median word posterior (0 when no words)
    coverage: float  # share of the voice-active frames inside recognised words
    phones: tuple[PhoneSegment, ...]  # empty when the words were not believable

    @property
    def aligned(self) -> bool:
        return bool(self.phones)


class WordAligner:
    """Word recogniser + phone aligner over one PocketSphinx decoder (built once, reused)."""

    def __init__(self, settings: RecognizerSettings = RecognizerSettings()) -> None:
        import pocketsphinx  # heavy: imported when an aligner is actually built

        model_dir = os.path.join(pocketsphinx.get_model_path(), "en-us")
        self._settings = settings
        self._decoder = pocketsphinx.Decoder(
            hmm=os.path.join(model_dir, "en-us"),
            lm=os.path.join(model_dir, "en-us.lm.bin"),
            dict=os.path.join(model_dir, "cmudict-en-us.dict"),
            fwdflat=False,
            bestpath=True,
            maxhmmpf=settings.max_hmms_per_frame,
            maxwpf=settings.max_words_per_frame,
            cmn="batch",  # each piece normalised by its own mean: the whole piece is at hand
            loglevel="FATAL",
        )
        warm_up(self._decoder)

    def align(self, audio: np.ndarray, activity: np.ndarray, offset_s: float = 0.0) -> AlignedPiece:
        """Recognise one piece; if the words are believable, return their timed phones.

        activity: voice activity 0..1 of the piece per 10 ms frame (frame 0 at its start)."""
        if audio.shape[0] < MIN_PIECE_S * SAMPLE_RATE_HZ:
            return AlignedPiece((), 0.0, 0.0, ())
        piece_end_s = offset_s + audio.shape[0] / SAMPLE_RATE_HZ
        head = np.zeros(HEAD_FRAMES * SAMPLE_RATE_HZ // FRAME_RATE_HZ, np.float32)
        pcm = to_pcm16(np.concatenate([head, audio, np.zeros(int(TAIL_SILENCE_S * SAMPLE_RATE_HZ), np.float32)]))
        fresh_start(self._decoder)
        self._decode(pcm)
        words = self._current_words()
        confidence = float(np.median([w.posterior for w in words])) if words else 0.0
        coverage = _coverage(words, activity)
        settings = self._settings
        if (
            len(words) < settings.min_words
            or confidence < settings.min_median_posterior
            or coverage < settings.min_coverage
        ):
            return AlignedPiece(words, confidence, coverage, ())
        try:
            self._decoder.set_alignment()  # state alignment to the current word segmentation
        except RuntimeError as exc:
            log.debug("recognised words could not be aligned: %s", exc)
            return AlignedPiece(words, confidence, coverage, ())
        try:
            self._decode(pcm)
            alignment = self._decoder.get_alignment()
            # Frames counted from the piece's start (the padding's are dropped or cut off).
            spans = ((phone.name, max(phone.start - HEAD_FRAMES, 0), phone.start + phone.duration - HEAD_FRAMES)
                     for word in (alignment or ()) for phone in word)
            phones = tuple(
                PhoneSegment(name, offset_s + start / FRAME_RATE_HZ, min(offset_s + end / FRAME_RATE_HZ, piece_end_s))
                for name, start, end in spans
                if end > start and offset_s + start / FRAME_RATE_HZ < piece_end_s
            )
        finally:
            self._decoder.activate_search()  # back to the LM search for the next piece
        return AlignedPiece(words, confidence, coverage, phones)

    def _decode(self, pcm: bytes) -> None:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()

    def _current_words(self) -> tuple[RecognisedWord, ...]:
        return tuple(  # frames counted from the piece's start, not the padding's
            RecognisedWord(seg.word.split("(")[0], max(seg.start_frame - HEAD_FRAMES, 0),
                           max(seg.end_frame + 1 - HEAD_FRAMES, 0), float(seg.prob))
            for seg in self._decoder.seg() or ()  # None when the search found no path
            if not seg.word.startswith(NON_WORDS)
        )


def _coverage(words: tuple[RecognisedWord, ...], activity: np.ndarray) -> float:
    """Share of the voice-active frames (activity > 0.5) that fall inside recognised words."""
    active = activity > 0.5
    if not active.any():
        return 0.0
    inside = np.zeros(active.shape[0], dtype=bool)
    for word in words:
        inside[word.start_frame : word.end_frame] = True
    return float(np.count_nonzero(inside & active)) / float(np.count_nonzero(active))

"""Output timelines: sync modes for dubbing and the order of voices in a conversation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from orchestrator.dubbing import timeline
from orchestrator.pipeline import Voice, _conversation
from postprocess.encode import AUDIO_RATE_HZ
from preprocess.audio import PEAK_LIMIT, RawTrack


def test_bounce_ping_pongs_without_repeating_the_end_frames() -> None:
    assert timeline(4, 10, "bounce").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3]


def test_bounce_cuts_a_longer_video_to_the_audio() -> None:
    assert timeline(100, 10, "bounce").tolist() == list(range(10))


def test_loop_restarts_from_the_first_frame() -> None:
    assert timeline(3, 7, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize(("source", "audio", "expected"), [(5, 9, 5), (9, 5, 5)])
def test_cut_off_is_as_long_as_the_shorter(source: int, audio: int, expected: int) -> None:
    assert len(timeline(source, audio, "cut_off")) == expected


def test_silence_is_as_long_as_the_video() -> None:
    assert len(timeline(12, 5, "silence")) == 12


def _voice(seconds: float, level: float) -> Voice:
    samples = np.full(int(seconds * AUDIO_RATE_HZ), level, np.float32)

    def write_output(dest: Path) -> int:
        samples.tofile(dest)
        return samples.size
    return Voice(features=samples[::3], write_output=write_output)


def _samples(track: RawTrack) -> np.ndarray:
    return track[0:track.size].copy()


def test_left_right_puts_the_right_voice_after_the_left(tmp_path: Path) -> None:
    starts, track = _conversation([_voice(1.0, 0.1), _voice(2.0, 0.2)], "left_right", tmp_path)
    samples = _samples(track)
    assert starts == [0.0, 1.0]
    assert samples.size == 3 * AUDIO_RATE_HZ
    assert samples[0] == pytest.approx(0.1) and samples[-1] == pytest.approx(0.2)


def test_right_left_starts_with_the_right_voice(tmp_path: Path) -> None:
    starts, track = _conversation([_voice(1.0, 0.1), _voice(2.0, 0.2)], "right_left", tmp_path)
    assert starts == [2.0, 0.0]
    assert _samples(track)[0] == pytest.approx(0.2)


def test_meanwhile_mixes_both_and_lasts_as_long_as_the_longer(tmp_path: Path) -> None:
    starts, track = _conversation([_voice(1.0, 0.1), _voice(2.0, 0.2)], "meanwhile", tmp_path)
    samples = _samples(track)
    assert starts == [0.0, 0.0]
    assert samples.size == 2 * AUDIO_RATE_HZ
    assert samples[0] == pytest.approx(0.3) and samples[-1] == pytest.approx(0.2)


def test_a_loud_mix_is_scaled_down_to_the_peak_limit(tmp_path: Path) -> None:
    _, track = _conversation([_voice(1.0, 0.7), _voice(1.0, 0.6)], "meanwhile", tmp_path)
    assert float(np.max(np.abs(_samples(track)))) == pytest.approx(PEAK_LIMIT)

"""Per-speaker articulation (orchestrator/dubbing/articulation.py): a map from the source's
own speech tracks to its measured mouth, applied to the new speech."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from orchestrator.dubbing.articulation import fit_speaker, source_speech, speaker_targets
from orchestrator.mouth_library import ACTIVITY, CLOSURE, JAW, LIP_OPEN, N_PARAMS, Calibration, MouthLibrary
from tests.media import media_file


def speech_tracks(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Stage-like tracks: smooth random opening and energy, speech everywhere."""
    params = np.zeros((count, N_PARAMS), np.float32)
    kernel = np.ones(5) / 5
    params[:, LIP_OPEN] = np.clip(np.convolve(rng.random(count), kernel, "same"), 0, 1)
    params[:, JAW] = params[:, LIP_OPEN] * 0.8
    params[:, ACTIVITY] = 1.0
    energy = np.clip(np.convolve(rng.random(count), kernel, "same"), 0, 1).astype(np.float32)
    return params, energy


def library_of(params: np.ndarray) -> MouthLibrary:
    n = params.shape[0]
    return MouthLibrary(params=params.astype(np.float32), raw=params.astype(np.float32),
                        pose=np.zeros((n, 3), np.float32), usable=np.ones(n, bool),
                        calibration=Calibration(np.zeros(N_PARAMS), np.ones(N_PARAMS)))


def test_the_map_learns_how_this_speaker_opens_for_the_energy() -> None:
    rng = np.random.default_rng(3)
    own, own_energy = speech_tracks(rng, 200)
    # This speaker's mouth follows the energy one frame late, not the stage's opening.
    measured = np.zeros_like(own)
    measured[:, LIP_OPEN] = np.roll(own_energy, 2)
    measured[:, JAW] = measured[:, LIP_OPEN] * 0.5
    speaker = fit_speaker(own, own_energy, library_of(measured))
    assert speaker is not None and speaker.r2[1] > 0.8
    new, new_energy = speech_tracks(rng, 120)
    aimed = speaker_targets(speaker, new, new_energy)
    expected = np.roll(new_energy, 2)[5:-5]
    assert np.corrcoef(aimed[5:-5, LIP_OPEN], expected)[0, 1] > 0.9
    assert np.corrcoef(new[5:-5, LIP_OPEN], expected)[0, 1] < 0.5  # the stage's own track did not say so


def test_closures_stay_shut_and_silence_stays_as_asked() -> None:
    rng = np.random.default_rng(4)
    own, own_energy = speech_tracks(rng, 200)
    measured = np.zeros_like(own)
    measured[:, LIP_OPEN] = own_energy
    speaker = fit_speaker(own, own_energy, library_of(measured))
    assert speaker is not None
    new, new_energy = speech_tracks(rng, 60)
    new[10:13, CLOSURE], new[10:13, LIP_OPEN] = 1.0, 0.0
    new[40:, ACTIVITY], new[40:, LIP_OPEN] = 0.0, 0.02
    aimed = speaker_targets(speaker, new, new_energy)
    assert (aimed[10:13, LIP_OPEN] == 0).all() and (aimed[10:13, CLOSURE] == 1).all()
    np.testing.assert_array_equal(aimed[40:], new[40:])


def test_no_map_without_enough_speech_or_when_the_mouth_does_not_follow_it() -> None:
    rng = np.random.default_rng(5)
    own, own_energy = speech_tracks(rng, 200)
    assert fit_speaker(own[:30], own_energy[:30], library_of(own[:30])) is None
    silent = own.copy()
    silent[:, ACTIVITY] = 0.0
    assert fit_speaker(silent, own_energy, library_of(own)) is None
    unrelated = np.zeros_like(own)
    unrelated[:, LIP_OPEN] = rng.random(200)
    assert fit_speaker(own, own_energy, library_of(unrelated)) is None


def test_the_source_soundtrack_is_read_only_as_far_as_asked() -> None:
    audio = source_speech(media_file("talk_a.mp4"), 3.0)
    assert audio is not None and audio.size == 3 * 16_000
    assert 0.02 < float(np.sqrt(np.mean(audio**2))) < 0.5  # loudness-normalised speech, not silence


def test_a_video_without_a_soundtrack_gives_no_speech(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height = 64, 64
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    assert source_speech(path, 3.0) is None

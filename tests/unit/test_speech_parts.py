"""How the orchestrator sends speech to the audio_features stage: whole, or as parts that its
instances decode side by side."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.dubbing.speech_cache import SpeechCache
from orchestrator.pipeline import Voice, _dub_speeches, _speech
from orchestrator.settings import OrchestratorSettings
from orchestrator.stages import AudioFeatures
from preprocess.audio import FEATURE_RATE_HZ
from tests.media import media_file


class RecordingStage:
    def __init__(self) -> None:
        self.parts: list[tuple[int, int]] = []
        self.sizes: list[int] = []

    async def audio_features(self, audio_16k: np.ndarray, fps: float, part: tuple[int, int] = (0, 1)) -> AudioFeatures:
        self.parts.append(part)
        self.sizes.append(audio_16k.size)
        frames = 3 + part[0]  # distinguishable per part
        return AudioFeatures(np.full((frames, 8), part[0], np.float32), np.full(frames, part[0], np.float32))


@pytest.mark.parametrize(("seconds", "parts_setting", "split", "expected"), [
    (10.0, 1, True, 1),    # short speech: whole, unless the settings ask for parts
    (10.0, 2, True, 2),
    (60.0, 1, True, 2),    # several decode pieces: one exact part per audio_features instance (2)
    (60.0, 1, False, 1),   # the other core is busy (dubbing tracks the video meanwhile)
    (300.0, 1, True, 1),   # too long: the parts' requests would double the audio held
    (2.0, 2, True, 1),     # too short to be worth it
])
def test_speech_goes_whole_or_in_parts(seconds: float, parts_setting: int, split: bool, expected: int) -> None:
    stage = RecordingStage()
    res = SimpleNamespace(stages=stage, settings=OrchestratorSettings(speech_parts=parts_setting),
                          stage_instances={"audio_features": 2})  # as Triton's model configuration says
    voice = np.zeros(int(seconds * FEATURE_RATE_HZ), np.float32)
    params, energy = asyncio.run(_speech(res, voice, 25.0, split=split))  # type: ignore[arg-type]
    assert stage.parts == [(i, expected) for i in range(expected)]
    # the answers are concatenated in part order
    assert params.shape[0] == energy.shape[0] == sum(3 + i for i in range(expected))
    assert list(params[:, 0]) == [i for i in range(expected) for _ in range(3 + i)]


@pytest.mark.parametrize(("tracked_s", "fit_max_s", "expected_s"), [
    (5.0, 30.0, 5.0),   # the source's speech over the tracked frames
    (5.0, 3.0, 3.0),    # but no more than the setting
])
def test_the_speaker_fit_analyses_at_most_its_setting_of_the_source(tracked_s: float, fit_max_s: float,
                                                                    expected_s: float) -> None:
    stage = RecordingStage()
    res = SimpleNamespace(stages=stage, settings=OrchestratorSettings(dub_speaker_fit_max_s=fit_max_s),
                          stage_instances={"audio_features": 2}, speech_cache=SpeechCache(0, 3600.0))
    rng = np.random.default_rng(0)
    voice = Voice(features=rng.normal(0, 0.1, 8 * FEATURE_RATE_HZ).astype(np.float32), write_output=lambda _: 0)
    new, own = asyncio.run(_dub_speeches(res, voice, media_file("talk_a.mp4"), tracked_s, 25.0,  # type: ignore[arg-type]
                                         own_speech=True, account_id="acct_1"))
    assert own is not None
    assert sorted(stage.sizes) == sorted([voice.features.size, int(expected_s * FEATURE_RATE_HZ)])


def test_a_video_the_account_dubbed_before_has_its_own_speech_analysed_once() -> None:
    stage = RecordingStage()
    res = SimpleNamespace(stages=stage, settings=OrchestratorSettings(), stage_instances={"audio_features": 2},
                          speech_cache=SpeechCache(8, 3600.0))
    rng = np.random.default_rng(0)
    voice = Voice(features=rng.normal(0, 0.1, 8 * FEATURE_RATE_HZ).astype(np.float32), write_output=lambda _: 0)
    own_size = int(5.0 * FEATURE_RATE_HZ)

    def dub(account: str, fps: float = 25.0) -> tuple[np.ndarray, np.ndarray] | None:
        stage.sizes.clear()
        _, own = asyncio.run(_dub_speeches(res, voice, media_file("talk_a.mp4"), 5.0, fps,  # type: ignore[arg-type]
                                           own_speech=True, account_id=account))
        return own

    first = dub("acct_1")
    assert sorted(stage.sizes) == sorted([voice.features.size, own_size])
    again = dub("acct_1")
    assert stage.sizes == [voice.features.size]  # only the new speech
    assert first is not None and again is not None
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    dub("acct_2")  # another account's dub of the same video is analysed afresh
    assert sorted(stage.sizes) == sorted([voice.features.size, own_size])
    dub("acct_1", fps=30.0)  # and so is another frame rate
    assert sorted(stage.sizes) == sorted([voice.features.size, own_size])

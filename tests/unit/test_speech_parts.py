"""How the orchestrator sends speech to the audio_features stage: whole, or as parts that its
instances decode side by side."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import numpy as np
import pytest

from orchestrator.pipeline import _speech
from orchestrator.settings import OrchestratorSettings
from orchestrator.stages import AudioFeatures
from preprocess.audio import FEATURE_RATE_HZ


class RecordingStage:
    def __init__(self) -> None:
        self.parts: list[tuple[int, int]] = []

    async def audio_features(self, audio_16k: np.ndarray, fps: float, part: tuple[int, int] = (0, 1)) -> AudioFeatures:
        self.parts.append(part)
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

"""Input media opened with the sniffed demuxer and the `file` protocol only: FFmpeg's own guess would open an ffconcat script as media that reads other files
of the orchestrator's disk (the concat demuxer's safe mode limits that to plain relative
names, e.g. a job's other inputs); the probe child and the decoders refuse it."""
from __future__ import annotations

import shutil
from pathlib import Path

import av
import pytest

from preprocess.audio import iter_audio
from preprocess.containers import INPUT_OPTIONS, open_input
from preprocess.decode import iter_video_frames
from preprocess.errors import MediaError
from preprocess.probe import close_probe_worker, probe
from tests.servers import MEDIA_DIR


@pytest.fixture
def concat_script(tmp_path: Path) -> Path:
    """An ffconcat script whose 'media' is another file beside it on the local disk."""
    shutil.copy(MEDIA_DIR / "speech_en_1.wav", tmp_path / "input-video")
    script = tmp_path / "input-audio"
    script.write_text("ffconcat version 1.0\nfile input-video\n")
    return script


def test_ffmpegs_own_guess_would_read_the_other_file(concat_script: Path) -> None:
    with av.open(str(concat_script)) as container:  # the attack, without the fix
        assert container.format.name == "concat" and container.streams.audio


async def test_the_probe_child_refuses_a_concat_script(concat_script: Path) -> None:
    try:
        with pytest.raises(MediaError) as info:
            await probe(concat_script, "audio")
    finally:
        await close_probe_worker()
    assert info.value.code == "unsupported_media"


def test_the_decoders_refuse_a_concat_script(concat_script: Path) -> None:
    with pytest.raises(MediaError):
        next(iter_audio(concat_script, 16_000, 60.0))
    with pytest.raises(MediaError):
        next(iter_video_frames(concat_script, 25.0, (64, 64)))


def test_real_media_opens_with_the_sniffed_demuxer_whatever_its_name(tmp_path: Path) -> None:
    misnamed = tmp_path / "input-video.wav"
    shutil.copy(MEDIA_DIR / "talk_a.mp4", misnamed)
    with open_input(misnamed) as container:
        assert container.format.name == "mov" and container.streams.video
        assert container.options == INPUT_OPTIONS
    with open_input(MEDIA_DIR / "speech_en_1.wav") as container:
        assert container.format.name == "wav"
    assert next(iter_audio(MEDIA_DIR / "speech_en_1.wav", 16_000, 60.0)).size > 0

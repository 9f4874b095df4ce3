"""Benchmark inputs: speech of an exact length made by concatenating the real 16 kHz speech
clips (speech_en_1 then speech_en_2, repeated), as WAV bytes for the loopback media server;
and a talking video made longer by playing it forwards and backwards in turn."""
from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np

from tests.servers import MEDIA_DIR

SPEECH_CLIPS = ("speech_en_1.wav", "speech_en_2.wav")


def _read_pcm(path: Path) -> tuple[np.ndarray, int, int]:
    """16-bit PCM frames as int16 [samples, channels], the rate and channel count."""
    with wave.open(str(path), "rb") as reader:
        if reader.getsampwidth() != 2:
            raise ValueError(f"{path.name}: only 16-bit PCM is supported")
        channels, rate = reader.getnchannels(), reader.getframerate()
        data = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return data.reshape(-1, channels), rate, channels


def speech_wav(duration_s: float, media_dir: Path = MEDIA_DIR) -> bytes:
    """A WAV file exactly `duration_s` long: the speech clips in turn, cut at the end."""
    clips = [_read_pcm(media_dir / name) for name in SPEECH_CLIPS]
    rates = {rate for _, rate, _ in clips}
    channel_counts = {channels for _, _, channels in clips}
    if len(rates) != 1 or len(channel_counts) != 1:
        raise ValueError("the speech clips must share one sample rate and channel count")
    rate, channels = rates.pop(), channel_counts.pop()
    if any(len(pcm) == 0 for pcm, _, _ in clips):
        raise ValueError("a speech clip is empty")
    wanted = int(round(duration_s * rate))
    parts: list[np.ndarray] = []
    have = 0
    while have < wanted:
        for pcm, _, _ in clips:
            take = pcm[: wanted - have]
            parts.append(take)
            have += len(take)
            if have >= wanted:
                break
    samples = np.concatenate(parts)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    return buffer.getvalue()


def wav_mono_float(data: bytes) -> tuple[np.ndarray, int]:
    """WAV bytes as mono float32 in -1..1 and the sample rate."""
    with wave.open(io.BytesIO(data), "rb") as reader:
        channels, rate = reader.getnchannels(), reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return (pcm.reshape(-1, channels).mean(axis=1) / 32768.0).astype(np.float32), rate


def looped_video(name: str, duration_s: float, media_dir: Path = MEDIA_DIR) -> bytes:
    """An MP4 (H.264, no audio) exactly `duration_s` long at the video's own size and rate:
    its frames forwards, then backwards, in turn (no jump where it turns)."""
    with av.open(str(media_dir / name)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or 25
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if len(frames) < 2:
        raise ValueError(f"{name}: too few frames to loop")
    wanted = int(round(duration_s * float(rate)))
    period = 2 * (len(frames) - 1)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as output:
        video = output.add_stream("libx264", rate=rate)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = {"crf": "18", "preset": "ultrafast"}
        for k in range(wanted):
            phase = k % period
            frame = av.VideoFrame.from_ndarray(frames[phase if phase < len(frames) else period - phase], format="rgb24")
            for packet in video.encode(frame):
                output.mux(packet)
        for packet in video.encode(None):
            output.mux(packet)
    return buffer.getvalue()

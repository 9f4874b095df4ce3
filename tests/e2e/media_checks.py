"""Decoding what the mesh produced: stream codecs, durations and sizes of an output MP4,
and Standard Webhooks signature checks written independently of the project's signer."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
from dataclasses import dataclass

import av
import numpy as np


@dataclass(frozen=True)
class VideoFacts:
    video_codec: str
    audio_codec: str
    width: int
    height: int
    fps: float
    frame_count: int
    video_duration_s: float
    audio_duration_s: float
    faststart: bool


def inspect_mp4(data: bytes) -> VideoFacts:
    with av.open(io.BytesIO(data)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        frames = sum(1 for _ in container.decode(video=0))
        fps = float(video.average_rate)
        audio_s = float(audio.duration * audio.time_base) if audio.duration else 0.0
        facts = VideoFacts(video_codec=video.codec_context.name, audio_codec=audio.codec_context.name,
                           width=video.codec_context.width, height=video.codec_context.height, fps=fps,
                           frame_count=frames, video_duration_s=frames / fps, audio_duration_s=audio_s,
                           faststart=data.find(b"moov") < data.find(b"mdat"))
    return facts


def decode_frames(data: bytes, every: int = 1) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(video=0)) if i % every == 0]


def webhook_signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part.split(",", 1)[1] == expected for part in headers["webhook-signature"].split(" "))

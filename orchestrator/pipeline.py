"""One job, start to finish, as numbered steps: download the inputs safely, probe them
against the limits, price the job, analyse speech and faces on the Triton stages, render
and encode, store the MP4. Raises MediaError for the user's bad input; anything else is
ours and the job is retried by redelivery."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from orchestrator.batches import abandon
from orchestrator.billing import Billing
from orchestrator.dubbing import (
    choose_mouths,
    frames_to_track,
    render_dub,
    shown_opening,
    source_library,
    timeline,
    track_video,
)
from orchestrator.dubbing.articulation import fit_speaker, source_speech, speaker_targets
from orchestrator.dubbing.speech_cache import SpeechCache
from orchestrator.faces import MAX_FACES, scale_face, select_faces
from orchestrator.fetch import Fetcher, FetchError, MediaKind
from orchestrator.motion import plan_motion
from orchestrator.mouth_library import LIP_OPEN
from orchestrator.quality import Quality
from orchestrator.quality import measure as measure_quality
from orchestrator.settings import OrchestratorSettings
from orchestrator.stages import Stages
from orchestrator.status import JobReporter
from orchestrator.talking_image import AnimatedFace, place_in_timeline, render_still
from postprocess.encode import AUDIO_RATE_HZ, Mp4Writer
from postprocess.storage import Storage
from preprocess import probe as probing
from preprocess.audio import (
    FEATURE_RATE_HZ,
    RawTrack,
    concat_tracks,
    decode_audio,
    loudness_gain,
    mix_tracks,
    write_track,
)
from preprocess.decode import SpareDecoder, VideoDecoder, load_image, output_size, resize_rgb
from preprocess.errors import MediaError
from proto import lipsync_pb2
from proto.vocabulary import DEFAULT_RESOLUTION, ErrorCode, Model, Resolution

log = logging.getLogger(__name__)
T = TypeVar("T")

SHORT_SIDES = {r.value: r.short_side for r in Resolution}
DETECT_MAX_SIDE = 1920
AUDIO_ROLES = ("audio", "left_audio", "right_audio")
# Job progress (0..1) where each stage starts; a stage's work fills the span up to the next.
PROGRESS = {
    "download": 0.02,
    "analysis": 0.08,
    "image_render": 0.2,   # a talking portrait: finding the face is quick, rendering is the work
    "dub_tracked": 0.38,   # a dub: tracking the source fills analysis up to here
    "dub_render": 0.4,
    "rendered": 0.95,
    "encode": 0.97,
}
# Speech between these lengths may be decoded in parts side by side. Shorter speech is not
# worth it; longer speech is not split because each part's request carries the whole audio
# (its loudness is measured on all of it), which would double the memory the long job holds,
# while the wait for its mouth parameters is a smaller share of its rendering time.
SPLIT_SPEECH_S = (4.0, 120.0)
# From this length on, the stage decodes speech in at least two ~30 s pieces (see its
# README): split there, the parts give the same phones as one request, so such speech always
# goes as one part per stage instance. Shorter speech is split only when the settings ask.
EXACT_SPLIT_S = 34.0


@dataclass
class JobResources:
    settings: OrchestratorSettings
    stages: Stages
    fetcher: Fetcher
    storage: Storage
    billing: Billing
    # Instances per stage model, as Triton's model configuration says (read at start-up).
    stage_instances: Mapping[str, int] = field(default_factory=dict)
    # The video decoder child the next dub takes, started while no dub runs.
    spare_decoder: SpareDecoder = field(default_factory=SpareDecoder)
    # Source videos' own speech, analysed once per account (`settings.dub_speech_cache_*`).
    speech_cache: SpeechCache = field(default_factory=lambda: SpeechCache(0, 0.0))


@dataclass
class JobResult:
    output_key: str
    duration_s: float
    timings_ms: dict[str, int] = field(default_factory=dict)
    quality: Quality | None = None


def _span(start: str, stop: str, fraction: float) -> float:
    """Progress `fraction` of the way from PROGRESS[start] to PROGRESS[stop]."""
    return PROGRESS[start] + (PROGRESS[stop] - PROGRESS[start]) * fraction


class StageTimer:
    def __init__(self) -> None:
        self.ms: dict[str, int] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0) + int((time.perf_counter() - start) * 1000)


async def run_job(request: lipsync_pb2.JobRequest, reporter: JobReporter, res: JobResources,
                  scratch: Path) -> JobResult:
    timer = StageTimer()
    settings = res.settings
    short_side = SHORT_SIDES.get(request.resolution or DEFAULT_RESOLUTION, 480)

    with contextlib.ExitStack() as cleanup:
        # A dub's video decoder (a child process): the spare started after the last dub, or
        # one started now, whose start-up then overlaps the download. The next spare starts
        # when this job is done.
        decoder = None
        if request.model == Model.VIDEO:
            cleanup.callback(res.spare_decoder.refill, settings.decoder_max_memory_bytes)
            decoder = cleanup.enter_context(res.spare_decoder.take(settings.decoder_max_memory_bytes))

        # 1. Download every input into the job's scratch directory (SSRF-safe, size-capped).
        await reporter.stage("download", PROGRESS["download"])
        with timer("download"):
            files = await _download(request, res, scratch)

        # 2. Decode the speech (normalised) and check the limits before any heavy work.
        await reporter.stage("analysis", PROGRESS["analysis"])
        with timer("analysis"):
            voices = {}
            for role, path in files.items():
                if role in AUDIO_ROLES or role.startswith("audios."):
                    # Open the container in a child process first: a decoder crash on hostile
                    # bytes then fails this job instead of taking the orchestrator down.
                    info = await probing.probe(path, "audio")
                    if not info.has_audio:
                        raise MediaError(ErrorCode.NO_AUDIO_STREAM, "The audio file has no audio stream")
                    voices[role] = await asyncio.to_thread(_load_voice, path, settings)

        if decoder is not None:
            return await _dub_video(request, reporter, res, scratch, files, voices["audio"], short_side, timer,
                                    decoder)
        return await _talking_image(request, reporter, res, scratch, files, voices, short_side, timer)


async def _download(request: lipsync_pb2.JobRequest, res: JobResources, scratch: Path) -> dict[str, Path]:
    max_bytes = res.settings.max_download_mb * 1024 * 1024
    wanted = dict(request.inputs)
    for i, url in enumerate(request.audios):
        wanted[f"audios.{i}"] = url
    files: dict[str, Path] = {}
    for role, url in wanted.items():
        kind = _media_kind(role)
        try:
            fetched = await res.fetcher.fetch(url, scratch / f"input-{role}", kind, max_bytes)
        except FetchError as exc:
            raise MediaError(exc.code, exc.message) from exc
        files[role] = fetched.path
    return files


def _media_kind(role: str) -> MediaKind:
    if role in AUDIO_ROLES or role.startswith("audios."):
        return MediaKind("audio")
    if role == "mask_image":
        return MediaKind("mask")
    return MediaKind("image" if role == "image" else "video")


@dataclass(frozen=True)
class Voice:
    features: np.ndarray                  # mono float32 at FEATURE_RATE_HZ, loudness-normalised
    write_output: Callable[[Path], int]   # writes the same at AUDIO_RATE_HZ to a raw track file

    @property
    def duration_s(self) -> float:
        return self.features.size / FEATURE_RATE_HZ


def _load_voice(path: Path, settings: OrchestratorSettings) -> Voice:
    # Decoded twice by PyAV's resampler (cheaper in memory than resampling in numpy): now at
    # the analysis rate, and at the output rate only when the frames are rendered, streamed
    # into a scratch file that the MP4 writer reads a second at a time (10 minutes at 48 kHz
    # would be 115 MB in memory). One gain, measured here, scales both.
    features = decode_audio(path, FEATURE_RATE_HZ, settings.max_audio_s)
    gain = np.float32(loudness_gain(features))
    features *= gain

    def write_output(dest: Path) -> int:
        return write_track(path, dest, AUDIO_RATE_HZ, settings.max_audio_s, float(gain))
    return Voice(features=features, write_output=write_output)


async def _speech(res: JobResources, voice: np.ndarray, fps: float, split: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mouth parameters and energy per output frame. Speech of SPLIT_SPEECH_S may go to the
    audio_features stage as parts, one per stage instance, decoded side by side (unless
    `split` is off because another stage has the other core meanwhile)."""
    shortest, longest = SPLIT_SPEECH_S
    parts = 1
    if split and shortest * FEATURE_RATE_HZ < voice.size <= longest * FEATURE_RATE_HZ:
        parts = res.stage_instances.get("audio_features", 1) if voice.size >= EXACT_SPLIT_S * FEATURE_RATE_HZ else res.settings.speech_parts
    answers = await asyncio.gather(*(res.stages.audio_features(voice, fps, part=(i, parts)) for i in range(parts)))
    return (np.concatenate([a.mouth_params for a in answers]), np.concatenate([a.energy for a in answers]))


async def _dub_speeches(res: JobResources, voice: Voice, video: Path, seconds: float, fps: float,
                        own_speech: bool, account_id: str,
                        ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """The new speech's mouth tracks, and (when asked and the video has a soundtrack) those of
    the source's own speech over its first `seconds` (at most the setting
    dub_speaker_fit_max_s), both from the audio_features stage, side by side. A video dubbed
    with its own soundtrack is analysed once; one this account dubbed before, not again
    (`SpeechCache`)."""
    if not own_speech:
        return await _speech(res, voice.features, fps, split=False), None
    own = await asyncio.to_thread(source_speech, video, min(seconds, res.settings.dub_speaker_fit_max_s))
    if own is None:
        return await _speech(res, voice.features, fps, split=False), None
    if own.size <= voice.features.size and np.allclose(own, voice.features[: own.size], atol=1e-4):
        new = await _speech(res, voice.features, fps, split=False)
        return new, new
    key = SpeechCache.key(account_id, own, fps)
    cached = res.speech_cache.get(key)
    if cached is not None:
        log.info("dub: the video's own speech was analysed before; its mouth tracks are reused")
        return await _speech(res, voice.features, fps, split=False), cached
    new, mine = await asyncio.gather(_speech(res, voice.features, fps, split=False), _speech(res, own, fps, split=False))
    res.speech_cache.put(key, mine)
    return new, mine


async def _speech_all(res: JobResources, voices: list[Voice], fps: float) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(await asyncio.gather(*(_speech(res, voice.features, fps) for voice in voices)))


@asynccontextmanager
async def _background(work: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """Run `work` as a task beside the block (await the task inside it for the result); a
    block that fails cancels the task (its own failure, if any, is logged by `abandon`)."""
    task = asyncio.ensure_future(work)
    try:
        yield task
    finally:
        if not task.done():
            await abandon([task])


def _load_mask(files: dict[str, Path], size: tuple[int, int], settings: OrchestratorSettings) -> np.ndarray | None:
    if "mask_image" not in files:
        return None
    mask = load_image(files["mask_image"], settings.max_image_pixels)
    return resize_rgb(mask, size).mean(axis=2)


async def _talking_image(request: lipsync_pb2.JobRequest, reporter: JobReporter, res: JobResources,
                         scratch: Path, files: dict[str, Path], voices: dict[str, Voice],
                         short_side: int, timer: StageTimer) -> JobResult:
    settings = res.settings
    fps = settings.image_fps
    with timer("analysis"):
        # 3. Lay the voices out in time (one voice, or a conversation by `order`).
        multi = request.model == "lipsync-image-multi"
        ordered = _ordered_voices(request, voices) if multi else [voices["audio"]]
        order = request.order if multi else "sequence"
        starts, duration_s = _turns(ordered, order)
        frame_count = max(1, math.ceil(duration_s * fps))

        # 4. Price the job now that its length is known (which also sets its deadline).
        await res.billing.reserve(request.job_id, duration_s, request.resolution or DEFAULT_RESOLUTION)
        reporter.expected_duration_s = duration_s

        # 5. Speech to mouth parameters for each voice on the audio_features stage, while
        #    this process finds the faces (two stages, two cores).
        async with _background(_speech_all(res, ordered, fps)) as speech:
            # 6. Find the faces on the image, at the output size.
            info = await probing.probe(files["image"], "image")
            if info.width * info.height > settings.max_image_pixels:
                raise MediaError(ErrorCode.IMAGE_TOO_LARGE, f"The image is {info.width}x{info.height}; at most "
                                 f"{settings.max_image_pixels // 1_000_000} megapixels are accepted")
            original = await asyncio.to_thread(load_image, files["image"], settings.max_image_pixels)
            size = output_size(original.shape[1], original.shape[0], short_side)
            image = resize_rgb(original, size)
            detect_scale = min(1.0, DETECT_MAX_SIDE / max(original.shape[:2]))
            detect_size = (max(1, round(original.shape[1] * detect_scale)),
                           max(1, round(original.shape[0] * detect_scale)))
            found = await res.stages.detect_faces(resize_rgb(original, detect_size), max_faces=MAX_FACES)
            found = [scale_face(f, size[0] / detect_size[0], size[1] / detect_size[1]) for f in found]
            faces = select_faces(found, len(ordered), _load_mask(files, size, settings))
            spoken = await speech

        # 7. Each voice's mouth on the conversation's timeline; the listener rests with life motion.
        animated = []
        openings: list[np.ndarray] = []
        energies: list[np.ndarray] = []
        for index, (face, (params, energy), start_s) in enumerate(zip(faces, spoken, starts, strict=True)):
            start = int(round(start_s * fps))
            params = place_in_timeline(params, start, frame_count)
            energy = place_in_timeline(energy, start, frame_count)
            motion = plan_motion(energy, params[:, 7], fps, int(request.seed) + index, request.prompt)
            animated.append(AnimatedFace(face=face, mouth_params=params, motion=motion))
            openings.append(params[:, LIP_OPEN])
            energies.append(energy)
        # Every output frame shows the portrait's faces; their mouths against the speech heard.
        quality = measure_quality(np.sum(openings, axis=0), np.max(energies, axis=0), frame_count, frame_count)
    await reporter.stage("render", PROGRESS["image_render"])

    # 8. Render every frame and encode it with the conversation's audio.
    output = scratch / "output.mp4"
    with timer("render"):
        _, track = await asyncio.to_thread(_conversation, ordered, order, scratch)
        with Mp4Writer(output, size, fps, track.fit(round(frame_count / fps * AUDIO_RATE_HZ))) as writer:
            async def on_batch(done: int) -> None:
                await reporter.progress(_span("image_render", "rendered", done / frame_count))
                if await reporter.is_canceled():
                    raise JobCanceled()
            await render_still(image, animated, frame_count, writer, res.stages,
                               settings.render_batch, on_batch)
            await asyncio.to_thread(writer.close)  # the encoders' flush and faststart, off the loop
    return await _store(request, reporter, res, output, frame_count / fps, timer, quality)


def _ordered_voices(request: lipsync_pb2.JobRequest, voices: dict[str, Voice]) -> list[Voice]:
    if request.audios:
        return [voices[f"audios.{i}"] for i in range(len(request.audios))]
    return [voices["left_audio"], voices["right_audio"]]


def _turns(voices: list[Voice], order: str) -> tuple[list[float], float]:
    """Start time of each voice and the length of the conversation: in turn, reversed, or
    all at once."""
    if order == "meanwhile":
        return [0.0] * len(voices), max(v.duration_s for v in voices)
    sequence = list(range(len(voices)))
    if order == "right_left":
        sequence.reverse()
    starts = [0.0] * len(voices)
    t = 0.0
    for i in sequence:
        starts[i] = t
        t += voices[i].duration_s
    return starts, t


def _conversation(voices: list[Voice], order: str, scratch: Path) -> tuple[list[float], RawTrack]:
    """Start time of each voice and the output-rate track of the conversation (each voice
    decoded into the job's scratch directory now; in turn, or mixed when `meanwhile`)."""
    starts, _ = _turns(voices, order)
    paths = [scratch / f"voice-{i}.f32" for i in range(len(voices))]
    for voice, path in zip(voices, paths, strict=True):
        voice.write_output(path)
    if len(voices) == 1:
        return starts, RawTrack(paths[0])
    if order == "meanwhile":
        return starts, mix_tracks(paths, scratch / "conversation.f32")
    sequence = sorted(range(len(voices)), key=lambda i: starts[i])
    return starts, concat_tracks([paths[i] for i in sequence], scratch / "conversation.f32")


async def _dub_video(request: lipsync_pb2.JobRequest, reporter: JobReporter, res: JobResources,
                     scratch: Path, files: dict[str, Path], voice: Voice, short_side: int,
                     timer: StageTimer, decoder: VideoDecoder) -> JobResult:
    settings = res.settings
    with timer("analysis"):
        # 3. Probe the video (in a child process) and check the limits.
        info = await probing.probe(files["video"], "video")
        if not info.has_video:
            raise MediaError(ErrorCode.UNSUPPORTED_MEDIA, "The video has no video stream")
        if info.duration_s > settings.max_video_s:
            raise MediaError(ErrorCode.VIDEO_TOO_LONG, f"Video is longer than {settings.max_video_s:.0f} s")
        _check_video_size(info, settings)
        fps = min(settings.max_fps, info.fps or 25.0)
        width, height = (info.height, info.width) if info.rotation_deg % 180 else (info.width, info.height)
        size = output_size(width, height, short_side)
        source_frames = max(1, round(info.duration_s * fps))
        audio_frames = max(1, math.ceil(voice.duration_s * fps))
        sync_mode = request.sync_mode or "bounce"
        expected = len(timeline(source_frames, audio_frames, sync_mode))
        # Only the source frames the output shows are decoded and tracked (a short voice on
        # a long video), but at least a library's worth for the mouth search.
        tracked_frames = frames_to_track(source_frames, audio_frames, sync_mode)

        # 4. Price the job now that its length is known (which also sets its deadline).
        await res.billing.reserve(request.job_id, expected / fps, request.resolution or DEFAULT_RESOLUTION)
        reporter.expected_duration_s = expected / fps

        # 5. Decode the source once and track the face through it, while the audio_features
        #    stage turns the new speech into mouth parameters (two stages, two cores).
        async def on_frame(done: int) -> None:
            await reporter.progress(_span("analysis", "dub_tracked", min(1.0, done / tracked_frames)))
        #    The source's own soundtrack goes through the same stage: how this speaker's mouth
        #    follows speech (orchestrator/dubbing/articulation.py).
        own_speech = settings.dub_speaker_fit and info.has_audio
        async with _background(_dub_speeches(res, voice, files["video"], tracked_frames / fps, fps,
                                             own_speech, request.account_id)) as speech:
            source = await track_video(
                decoder.frames(files["video"], fps, size, info.rotation_deg), tracked_frames,
                scratch / "frames.rgb", size, res.stages, _load_mask(files, size, settings), on_frame)
            # 5b. The person's own mouths (the library), measured while the speech may still be analysed.
            async with _background(asyncio.to_thread(source_library, source)) as measuring:
                (params, energy), own = await speech
                library = await measuring

        # 6. The new speech as mouth parameters on the output timeline.
        order = timeline(source.count, audio_frames, sync_mode)
        params = place_in_timeline(params, 0, len(order))
        energy = place_in_timeline(energy, 0, len(order))
        # 6b. The person's own mouth for each output frame, where the video has a close one,
        #     aimed at the openings this speaker makes for such speech.
        speaker = fit_speaker(own[0][: source.count], own[1][: source.count], library) if own is not None else None
        if speaker is not None:
            params = speaker_targets(speaker, params, energy)
        mouths = await asyncio.to_thread(choose_mouths, source, order, params, library)
        opening = shown_opening(source, library, order, mouths.references, params, mouths.opening_params)
        quality = measure_quality(opening, energy, int(np.isfinite(opening).sum()), len(order))
    await reporter.stage("render", PROGRESS["dub_render"])

    # 7. Render the output timeline and encode it with the new speech.
    output = scratch / "output.mp4"
    with timer("render"):
        await asyncio.to_thread(voice.write_output, scratch / "voice.f32")
        audio = RawTrack(scratch / "voice.f32", round(len(order) / fps * AUDIO_RATE_HZ))
        with Mp4Writer(output, size, fps, audio) as writer:
            async def on_batch(done: int) -> None:
                await reporter.progress(_span("dub_render", "rendered", done / len(order)))
                if await reporter.is_canceled():
                    raise JobCanceled()
            await render_dub(source, order, params, writer, res.stages, settings.dub_render_batch, on_batch,
                             mouths.references, mouths.opening)
            await asyncio.to_thread(writer.close)  # the encoders' flush and faststart, off the loop
    return await _store(request, reporter, res, output, len(order) / fps, timer, quality)


def _check_video_size(info: probing.MediaInfo, settings: OrchestratorSettings) -> None:
    """Each source frame is decoded whole: its size and rate bound the decoder's memory and
    time, so both are limited before anything is decoded."""
    if info.width * info.height > settings.max_video_pixels:
        raise MediaError(ErrorCode.VIDEO_TOO_LARGE, f"The video is {info.width}x{info.height}; at most "
                         f"{settings.max_video_pixels:,} pixels a frame are accepted")
    if info.fps > settings.max_video_fps:
        raise MediaError(ErrorCode.VIDEO_TOO_LARGE, f"The video has {info.fps:.0f} frames per second; at most "
                         f"{settings.max_video_fps:.0f} are accepted")


async def _store(request: lipsync_pb2.JobRequest, reporter: JobReporter, res: JobResources,
                 output: Path, duration_s: float, timer: StageTimer, quality: Quality | None = None) -> JobResult:
    # 8. Keep the MP4 under a key made from the job id: a redelivered job overwrites it.
    await reporter.stage("encode", PROGRESS["encode"])
    with timer("encode"):
        if res.settings.hold_encode_s:  # tests only (see the setting)
            await asyncio.sleep(res.settings.hold_encode_s)
        key = f"outputs/{request.job_id}.mp4"
        await asyncio.to_thread(res.storage.put_file, key, output)
    return JobResult(output_key=key, duration_s=duration_s, timings_ms=timer.ms, quality=quality)


class JobCanceled(Exception):
    """The gateway set the job's cancel flag; the job stops between batches."""

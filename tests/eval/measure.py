"""One case measured: track the faces of a video (a real one, a still portrait, or what the
mesh made), score each face against its voice, and compare it with its source for identity,
untouched pixels and stability; draws the contact sheet. Numbers land in a Measurement."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tests.eval import identity, media, realmouth, stability, sync
from tests.eval.cases import STILL_FPS, Case, Voice
from tests.eval.contact import draw_sheet
from tests.eval.phones import PhoneRecognizer, Transcript
from tests.eval.tracks import TrackedVideo, load_face_mesh, track_faces

logger = logging.getLogger(__name__)
NAN = float("nan")
RATE_HZ = media.AUDIO_RATE_HZ


@dataclass(frozen=True)
class Measurement:
    case: str
    group: str
    face: str = ""  # which face of a multi-person case
    expect_sync: bool = True
    sheet: str = ""
    phones_method: str = ""
    face_found: float = NAN
    auc: float = NAN
    n_bilabial: int = 0
    n_open: int = 0
    corr_lag0: float = NAN
    best_lag: int = 0
    corr_best: float = NAN
    listener_ratio: float = NAN
    original_corr: float = NAN
    psnr_outside_db: float = NAN
    ssim_outside: float = NAN
    id_distance: float = NAN
    geometry: float = NAN
    jitter: float = NAN
    real_corr_lag0: float = NAN  # output mouth opening vs the driving video's real mouth
    real_best_lag: int = 0
    real_corr_best: float = NAN
    sharpness_ratio: float = NAN  # output mouth sharpness / source video's own mouth
    quality: str = ""  # the job's own quality block: "offset / confidence / faces found of frames"
    rtf: float = NAN
    duration_s: float = NAN
    rss_mib: dict[str, float] = field(default_factory=dict)
    note: str = ""


class Evaluator:
    """Shared measuring tools (face mesh, phone recogniser, face descriptor) and caches."""

    def __init__(self, media_dir: Path, report_dir: Path) -> None:
        self.media_dir = media_dir
        self.report_dir = report_dir
        self.face_mesh = load_face_mesh()
        self.recognizer = PhoneRecognizer()
        self.embedder = identity.FaceEmbedder()
        self._transcripts: dict[str, Transcript] = {}
        self._sources: dict[str, tuple[media.VideoInfo, TrackedVideo]] = {}

    def audio(self, name: str) -> np.ndarray:
        return media.read_audio(self.media_dir / name, RATE_HZ)

    def transcript(self, name: str) -> Transcript:
        if name not in self._transcripts:
            self._transcripts[name] = self.recognizer.transcribe(self.audio(name))
            logger.info("%s: %s phones (%s): %s", name, len(self._transcripts[name].phones),
                        self._transcripts[name].method, self._transcripts[name].words)
        return self._transcripts[name]

    def source_video(self, name: str) -> tuple[media.VideoInfo, TrackedVideo]:
        """A source video's landmarks, tracked once."""
        if name not in self._sources:
            path = self.media_dir / name
            info = media.probe_video(path)
            self._sources[name] = (info, track_faces(self.face_mesh, media.read_frames(path), info.fps, info.frame_count))
        return self._sources[name]

    def measure(self, case: Case, video: Path | None = None, job: dict[str, Any] | None = None,
                rss_mib: dict[str, float] | None = None) -> list[Measurement]:
        """Measure a calibration case (video None) or the mesh's output video for the case."""
        frames, fps, frame_count = self._frames(case, video)
        tracked = (self.source_video(case.video)[1] if video is None and case.video
                   else track_faces(self.face_mesh, frames(), fps, frame_count, case.faces))
        rows = self._sync_rows(case, tracked)
        extra: dict[str, Any] = {"sheet": f"{case.name}.png", "duration_s": frame_count / fps, "rss_mib": rss_mib or {}}
        if job is not None and job.get("quality"):
            q = job["quality"]
            extra["quality"] = (f"{q['sync_offset_frames']:+d} / {q['sync_confidence']:.2f} / "
                                f"{q['faces_found']} of {q['frames']}")
        if job is not None and job.get("executionTime"):
            extra["rtf"] = float(job["executionTime"]) / 1000 / (frame_count / fps)
        if case.group == "video" and case.video:
            extra.update(self._dubbing_checks(case, tracked, frames))
        if case.real_mouth:
            extra.update(self._real_mouth(case, tracked))
        rows = [replace(r, **extra, **self._identity(case, tracked, r.face)) for r in rows]
        energy = sync.frame_energy_db(self._timeline_audio(case, frame_count / fps), RATE_HZ, fps, frame_count)
        phones = [p for voice, offset in self._voice_offsets(case) for p in _shift(self.transcript(voice.audio), offset)]
        draw_sheet(self.report_dir / f"{case.name}.png", f"{case.name} ({case.group})", tracked.samples,
                   [t.landmarks for t in tracked.tracks], fps, phones, energy)
        return rows

    def _frames(self, case: Case, video: Path | None) -> tuple[Callable[[], Iterator[np.ndarray]], float, int]:
        if video is not None:
            info = media.probe_video(video)
            return (lambda: media.read_frames(video)), info.fps, info.frame_count
        if case.video:
            info = media.probe_video(self.media_dir / case.video)
            path = self.media_dir / case.video
            return (lambda: media.read_frames(path)), info.fps, info.frame_count
        assert case.image is not None, case
        image = media.read_image(self.media_dir / case.image)
        count = int(round(len(self.audio(case.voices[0].audio)) / RATE_HZ * STILL_FPS))
        return (lambda: media.still_frames(image, count)), STILL_FPS, count

    def _voice_offsets(self, case: Case) -> list[tuple[Voice, float]]:
        out: list[tuple[Voice, float]] = []
        end_s = 0.0
        for voice in case.voices:
            offset = voice.offset_s + (end_s if voice.after_previous else 0.0)
            out.append((voice, offset))
            end_s = offset + len(self.audio(voice.audio)) / RATE_HZ
        return out

    def _timeline_audio(self, case: Case, duration_s: float) -> np.ndarray:
        timeline = np.zeros(int(duration_s * RATE_HZ), np.float32)
        for voice, offset in self._voice_offsets(case):
            samples = self.audio(voice.audio)
            start = int(offset * RATE_HZ)
            piece = samples[: max(0, timeline.size - start)]
            timeline[start: start + piece.size] += piece
        return timeline

    def _sync_rows(self, case: Case, tracked: TrackedVideo) -> list[Measurement]:
        rows = []
        fps = tracked.fps
        for voice, offset in self._voice_offsets(case):
            samples = self.audio(voice.audio)
            first = int(round(offset * fps))
            last = min(tracked.tracks[0].frame_count, first + int(np.ceil(len(samples) / RATE_HZ * fps)))
            track = tracked.tracks[voice.face]
            opening = sync.mouth_opening(track.landmarks)[first:last]
            transcript = self.transcript(voice.audio)
            score = sync.score_sync(opening, transcript.phones, samples, RATE_HZ, fps)
            listeners = [sync.mouth_opening(t.landmarks)[first:last] for i, t in enumerate(tracked.tracks) if i != voice.face]
            ratio = (float(np.nanstd(listeners[0]) / max(np.nanstd(opening), 1e-9)) if listeners else NAN)
            rows.append(Measurement(
                case=case.name, group=case.group, face=("left", "right")[voice.face] if case.faces > 1 else "",
                expect_sync=case.expect_sync, phones_method=transcript.method, face_found=track.found_fraction,
                auc=score.bilabial_auc, n_bilabial=score.bilabial_frames, n_open=score.open_frames,
                corr_lag0=score.corr_lag0, best_lag=score.best_lag_frames, corr_best=score.corr_best,
                listener_ratio=ratio, jitter=stability.landmark_jitter(track.landmarks)))
        return rows

    def _identity(self, case: Case, tracked: TrackedVideo, face: str) -> dict[str, float]:
        """Descriptor distance and upper-face geometry of the output face against its source."""
        slot = {"": 0, "left": 0, "right": 1}[face]
        if case.image:
            reference = media.read_image(self.media_dir / case.image)
            ref_faces = sorted(self.face_mesh.detect(reference, max_faces=case.faces), key=lambda f: float(f.box[0]))
            if len(ref_faces) <= slot:
                return {}
            ref_landmarks = np.repeat(ref_faces[slot].landmarks[None], tracked.tracks[slot].frame_count, axis=0)
        else:
            assert case.video is not None
            _, source = self.source_video(case.video)
            reference = next(iter(source.samples.values()))
            ref_landmarks = source.tracks[0].landmarks  # dubbing: frame i against source frame i
            if case.group == "calibration":  # a real video against its own first frame
                ref_landmarks = np.repeat(ref_landmarks[:1], len(ref_landmarks), axis=0)
        track = tracked.tracks[slot].landmarks
        count = min(len(track), len(ref_landmarks))
        distances = [identity.procrustes_distance(track[i, list(identity.UPPER_FACE), :2],
                                                  ref_landmarks[i, list(identity.UPPER_FACE), :2])
                     for i in range(count) if np.isfinite(track[i, 0, 0]) and np.isfinite(ref_landmarks[i, 0, 0])]
        out = {"geometry": float(np.median(distances)) if distances else NAN}
        ref_center = np.nanmean(ref_landmarks[0, :, :2], axis=0)
        ref_embedding = self.embedder.embed(reference, ref_center)
        if ref_embedding is not None:
            found = []
            for index, frame in tracked.samples.items():
                if np.isfinite(track[index, 0, 0]):
                    embedding = self.embedder.embed(frame, track[index, :, :2].mean(0))
                    if embedding is not None:
                        found.append(float(np.linalg.norm(embedding - ref_embedding)))
            out["id_distance"] = float(np.median(found)) if found else NAN
        if case.image and case.group != "calibration":
            out.update(self._untouched_vs_image(reference, tracked, slot))
        return out

    def _untouched_vs_image(self, image: np.ndarray, tracked: TrackedVideo, slot: int) -> dict[str, float]:
        """PSNR/SSIM outside the lower face(s) of the sample frames against the resized portrait."""
        mses, ssims = [], []
        for index, frame in tracked.samples.items():
            source = media.resize_to(image, frame.shape[1], frame.shape[0])
            masked = np.zeros(frame.shape[:2], bool)
            for track in tracked.tracks:
                if np.isfinite(track.landmarks[index, 0, 0]):
                    masked |= identity.lower_face_mask(track.landmarks[index], *frame.shape[:2])
            mses.append(identity.masked_mse(frame, source, ~masked))
            ssims.append(identity.masked_ssim(frame, source, ~masked))
        return {"psnr_outside_db": identity.psnr_from_mse(float(np.mean(mses))), "ssim_outside": float(np.mean(ssims))}

    def _real_mouth(self, case: Case, tracked: TrackedVideo) -> dict[str, float]:
        """The output's mouth opening against the real mouth of the video whose speech drives it."""
        assert case.real_mouth is not None
        _, real = self.source_video(case.real_mouth)
        output = sync.mouth_opening(tracked.tracks[0].landmarks)
        reference = realmouth.resample_track(sync.mouth_opening(real.tracks[0].landmarks), real.fps,
                                             tracked.fps, output.size)
        score = realmouth.real_mouth_score(output, reference)
        return {"real_corr_lag0": score.corr_lag0, "real_best_lag": score.best_lag, "real_corr_best": score.corr_best}

    def _dubbing_checks(self, case: Case, tracked: TrackedVideo,
                        frames: Callable[[], Iterator[np.ndarray]]) -> dict[str, float]:
        """Correlation with the video's original speech, and PSNR outside the face per frame."""
        assert case.video is not None
        path = self.media_dir / case.video
        opening = sync.mouth_opening(tracked.tracks[0].landmarks)
        original = sync.frame_energy_db(self.audio(case.video), RATE_HZ, tracked.fps, opening.size)
        mses, ssims = [], []
        landmarks = tracked.tracks[0].landmarks
        source_landmarks = self.source_video(case.video)[1].tracks[0].landmarks
        out_sharp, src_sharp = [], []
        for index, (out, src) in enumerate(zip(frames(), media.read_frames(path), strict=False)):
            if index < len(source_landmarks):  # both at their own full resolution, compared scale-free
                out_sharp.append(realmouth.sharpness(out, landmarks[index]))
                src_sharp.append(realmouth.sharpness(src, source_landmarks[index]))
            src = media.resize_to(src, out.shape[1], out.shape[0])
            keep = (~identity.face_mask(landmarks[index], *out.shape[:2]) if np.isfinite(landmarks[index, 0, 0])
                    else np.ones(out.shape[:2], bool))
            mses.append(identity.masked_mse(out, src, keep))
            if index in tracked.samples:
                ssims.append(identity.masked_ssim(out, src, keep))
        return {"original_corr": sync.pearson(opening, original),
                "sharpness_ratio": realmouth.sharpness_ratio(out_sharp, src_sharp),
                "psnr_outside_db": identity.psnr_from_mse(float(np.mean(mses))),
                "ssim_outside": float(np.mean(ssims)) if ssims else NAN}


def _shift(transcript: Transcript, offset_s: float) -> list[sync.Phone]:
    return [sync.Phone(p.label, p.start_s + offset_s, p.end_s + offset_s) for p in transcript.phones]

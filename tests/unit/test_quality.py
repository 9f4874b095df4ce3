"""The job's quality block (orchestrator.quality): the sync offset and confidence of a
rendered mouth track against the speech energy, on signals with known answers."""
from __future__ import annotations

import numpy as np

from orchestrator.jobobject import job_record
from orchestrator.quality import measure, sync_offset
from proto import lipsync_pb2
from proto.jobobject import job_object
from proto.urlsign import UrlSigner

SIGNER = UrlSigner(b"k" * 32, "http://127.0.0.1:1")


def _speech(frames: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.convolve(rng.uniform(0, 1, frames), np.ones(3) / 3, mode="same"), 0, 1)


def test_a_mouth_that_leads_the_sound_by_two_frames_is_found_with_confidence() -> None:
    energy = _speech(200)
    mouth = np.concatenate([energy[2:], np.zeros(2)])  # mouth[t] = energy[t + 2]: the mouth leads
    offset, confidence = sync_offset(mouth, energy)
    assert offset == 2
    assert confidence > 0.4


def test_an_unrelated_mouth_gets_low_confidence() -> None:
    offset, confidence = sync_offset(_speech(200, seed=1), _speech(200, seed=2))
    assert confidence < 0.3
    assert -5 <= offset <= 5


def test_smooth_tracks_that_follow_each_other_have_one_clear_peak() -> None:
    """Real mouth and speech tracks vary over several frames, so lags next to the true one
    correlate almost as well: the confidence's baseline reaches past them (±15 frames)."""
    window = np.hanning(9) / np.hanning(9).sum()
    energy = np.convolve(np.random.default_rng(3).uniform(0, 1, 150), window, mode="same")
    mouth = np.roll(energy, 1) + np.random.default_rng(5).normal(0, 0.02, 150)  # the mouth lags a frame
    offset, confidence = sync_offset(mouth, energy)
    assert offset == -1 and confidence > 0.8
    unrelated = np.convolve(np.random.default_rng(4).uniform(0, 1, 150), window, mode="same")
    assert sync_offset(unrelated, energy)[1] < 0.3


def test_faceless_frames_are_left_out_and_a_silent_clip_measures_nothing() -> None:
    energy = _speech(120)
    mouth = energy.copy()
    mouth[:40] = np.nan  # no face there
    quality = measure(mouth, energy, faces_found=80, frames=120)
    assert quality.sync_offset_frames == 0 and quality.sync_confidence > 0.4
    assert (quality.faces_found, quality.frames) == (80, 120)
    silent = measure(np.zeros(50), np.zeros(50), 50, 50)
    assert (silent.sync_offset_frames, silent.sync_confidence) == (0, 0.0)


def test_the_webhook_job_object_carries_the_quality_block_when_completed() -> None:
    request = lipsync_pb2.JobRequest(job_id="j1", model="lipsync-video", seed=1)
    status = lipsync_pb2.JobStatus(job_id="j1", status="completed", output_key="outputs/j1.mp4")
    status.quality.CopyFrom(measure(_speech(60), _speech(60), 60, 60).to_proto())
    body = job_object(job_record(request, status), SIGNER, 60)
    assert body["quality"] == {"sync_offset_frames": 0, "sync_confidence": status.quality.sync_confidence,
                               "faces_found": 60, "frames": 60}
    assert status.quality.sync_confidence > 0.4
    failed = lipsync_pb2.JobStatus(job_id="j1", status="failed")
    assert job_object(job_record(request, failed), SIGNER, 60)["quality"] is None


def test_the_gateway_keeps_the_quality_block_through_settlement_and_shows_it_on_get(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt  # noqa: PLC0415

    from gateway.billing.settlement import Outcome, read_timings_record, timings_record  # noqa: PLC0415
    from gateway.files import FileSigner  # noqa: PLC0415
    from gateway.jobs import to_public  # noqa: PLC0415
    from gateway.jobviews import JobView  # noqa: PLC0415

    status = lipsync_pb2.JobStatus(job_id="j2", status="completed", output_key="outputs/j2.mp4",
                                   execution_time_ms=900, completed_at_ms=1_700_000_000_000)
    status.timings_ms["render"] = 700
    status.quality.CopyFrom(lipsync_pb2.JobQuality(sync_offset_frames=-1, sync_confidence=0.25,
                                                   faces_found=98, frames=100))
    outcome = Outcome.from_status(status)
    stored = timings_record(outcome.timings_ms, outcome.quality)
    assert read_timings_record(stored) == ({"render": 700}, outcome.quality)
    view = JobView(id="j2", model="lipsync-video", status="completed", seed=1, form_state_json="{}",
                   output_key="outputs/j2.mp4", error="", error_code="", execution_time_ms=900,
                   timings_json=stored, created_at=dt.datetime(2026, 1, 1), completed_at=dt.datetime(2026, 1, 1))
    public = to_public(view, None, FileSigner(b"k" * 32, "http://127.0.0.1:1", tmp_path), 60)
    assert public.quality == {"sync_offset_frames": -1, "sync_confidence": 0.25, "faces_found": 98, "frames": 100}
    assert public.timings == {"render": 700}
    # the webhook body built by the orchestrator says the same
    request = lipsync_pb2.JobRequest(job_id="j2", model="lipsync-video", seed=1)
    assert job_object(job_record(request, status), SIGNER, 60)["quality"] == public.quality

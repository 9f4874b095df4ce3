"""The shared job-object builder: what GET and the webhook body both show for a job."""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

from proto.jobobject import JobRecord, datetime_from_ms, iso_from_ms, job_body, job_object, ms_from_datetime
from proto.urlsign import UrlSigner

SIGNER = UrlSigner(b"secret", "https://api.example.com")
NOW = 1_700_000_123.0
BASE = JobRecord(id="j1", model="lipsync-image", status="processing", seed=7,
                 form_state_json='{"seed": 7, "image": "https://x/a.png"}', created_at_ms=1_700_000_000_123)


def build(**changes: object) -> dict[str, object]:
    return job_object(replace(BASE, **changes), SIGNER, 3600, now_s=NOW)


def test_completed_job_has_one_signed_output_and_its_expiry() -> None:
    job = build(status="completed", output_key="outputs/j1.mp4", execution_time_ms=1200,
                timings_ms={"render": 900}, completed_at_ms=1_700_000_100_000)
    assert job["outputs"] == [job["output"]]
    query = parse_qs(urlsplit(str(job["output"])).query)
    expires = int(query["expires"][0])
    assert expires % 3600 == 0 and expires >= NOW + 3600
    assert SIGNER.verify("outputs/j1.mp4", expires, query["signature"][0], now_s=NOW)
    assert job["expires_at"] == iso_from_ms(expires * 1000)
    assert (job["progress"], job["stage"], job["error_code"], job["error"]) == (1.0, "done", None, "")
    assert job["executionTime"] == 1200 and job["timings"] == {"render": 900}
    assert job["created_at"] == "2023-11-14T22:13:20.123Z"
    assert job["formState"] == {"seed": 7, "image": "https://x/a.png"}


def test_canceled_job_always_says_canceled_and_failed_keeps_its_error() -> None:
    canceled = build(status="canceled", completed_at_ms=1_700_000_100_000, progress=0.4, stage="render")
    assert canceled["error_code"] == "canceled" and canceled["output"] is None
    assert (canceled["progress"], canceled["stage"]) == (0.0, "done")
    failed = build(status="failed", error="No face", error_code="face_not_found", completed_at_ms=5)
    assert (failed["error"], failed["error_code"], failed["executionTime"]) == ("No face", "face_not_found", None)


def test_processing_job_shows_live_progress_and_no_completion() -> None:
    job = build(progress=0.25, stage="render", completed_at_ms=99)
    assert (job["progress"], job["stage"], job["completed_at"], job["output"]) == (0.25, "render", None, None)
    assert build()["stage"] == "queued"


def test_milliseconds_round_trip_without_float_error() -> None:
    for ms in (1_733_412_345_123, 1_733_412_345_999, 1_000, 1_796_501_400_321):
        assert ms_from_datetime(datetime_from_ms(ms)) == ms
        assert iso_from_ms(ms) == datetime_from_ms(ms).replace(tzinfo=dt.UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")


def test_the_link_never_outlives_the_file() -> None:
    """Retention and link lifetime both 1 h: the rounded-up expiry would reach past the moment
    the sweep removes the file, so the link ends exactly then; GET and the webhook body agree."""
    record = replace(BASE, status="completed", output_key="outputs/j1.mp4", completed_at_ms=int(NOW * 1000))
    uncapped = job_object(record, SIGNER, 3600, now_s=NOW)
    capped = job_object(record, SIGNER, 3600, now_s=NOW, retention_s=3600)
    expires = int(parse_qs(urlsplit(str(capped["output"])).query)["expires"][0])
    assert int(parse_qs(urlsplit(str(uncapped["output"])).query)["expires"][0]) > NOW + 3600  # rounded up
    assert expires == int(NOW + 3600) and capped["expires_at"] == iso_from_ms(expires * 1000)
    assert json.loads(job_body(record, SIGNER, 3600, NOW, retention_s=3600))["output"] == capped["output"]
    # a retention longer than the link's lifetime changes nothing
    assert job_object(record, SIGNER, 3600, now_s=NOW, retention_s=7 * 86400)["output"] == uncapped["output"]

"""One vocabulary: statuses, error codes, models and resolutions come from proto/vocabulary.py,
and the service code uses its members rather than re-typing the strings."""
from __future__ import annotations

import re
import typing
from pathlib import Path

from gateway.api import schemas
from proto.vocabulary import MODELS, RESOLUTIONS, TERMINAL_STATUSES, ErrorCode, JobStatus, Resolution

ROOT = Path(__file__).resolve().parents[2]
PLAIN_CODE = re.compile(
    r'(?:MediaError|FetchError)\(\s*"[a-z_]+"|ApiError\(\s*\d+,\s*"[a-z_]+"|error_code\s*=\s*"[a-z_]+"'
)
PLAIN_STATUS = re.compile(r'(?:status|TERMINAL\w*)\s*(?:==|!=|=|in)\s*\(?"(?:processing|completed|failed|canceled)"')


def test_statuses_and_terminality() -> None:
    assert [s.value for s in JobStatus] == ["processing", "completed", "failed", "canceled"]
    assert TERMINAL_STATUSES == {"completed", "failed", "canceled"}
    assert not JobStatus.PROCESSING.is_terminal and JobStatus("canceled").is_terminal


def test_members_behave_as_their_strings() -> None:
    assert f"{ErrorCode.FACE_NOT_FOUND}" == "face_not_found" and str(JobStatus.FAILED) == "failed"
    assert {"480p": 1}[Resolution.P480] == 1 and JobStatus.COMPLETED in TERMINAL_STATUSES
    assert Resolution.P720.short_side == 720


def test_api_schema_literals_are_the_vocabulary() -> None:
    assert typing.get_args(schemas.Resolution) == RESOLUTIONS
    assert MODELS == ("lipsync-video", "lipsync-image", "lipsync-image-multi")


def test_service_code_uses_the_vocabulary_not_plain_strings() -> None:
    assert PLAIN_CODE.search('raise MediaError("face_not_found", "x")')  # the scan can see one
    assert PLAIN_STATUS.search('if job.status == "completed":')
    offenders = []
    for package in ("gateway", "orchestrator", "preprocess", "postprocess"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in PLAIN_CODE.finditer(text)]
            offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in PLAIN_STATUS.finditer(text)]
    assert offenders == []

"""A running job's progress as the gateway sees it: JobStatus records in the JetStream
key-value bucket, the cancel flag the gateway sets, and the final JobEvent that settles
credits. The orchestrator owns a job's status while it runs."""
from __future__ import annotations

import logging
import time

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from proto import lipsync_pb2, topology
from proto.vocabulary import JobStatus

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class JobReporter:
    """Writes one job's status; throttles progress writes to a few per second."""

    def __init__(self, js: JetStreamContext, status_kv: KeyValue, control_kv: KeyValue,
                 job_id: str, attempt: int, seed: int, signing_key: bytes = b"") -> None:
        self._js = js
        self._signing_key = signing_key
        self._status_kv = status_kv
        self._control_kv = control_kv
        self.status = lipsync_pb2.JobStatus(job_id=job_id, status=JobStatus.PROCESSING, stage="queued",
                                            attempt=attempt, seed=seed)
        self._last_put = 0.0
        self.canceled_at_ms = 0  # when the gateway canceled the job, read from the flag
        # The output's length once the job is priced; the orchestrator's deadline grows with it.
        self.expected_duration_s = 0.0

    async def stage(self, stage: str, progress: float | None = None) -> None:
        self.status.stage = stage
        if progress is not None:
            self.status.progress = max(self.status.progress, min(1.0, progress))
        await self._put(force=True)

    async def progress(self, progress: float) -> None:
        self.status.progress = max(self.status.progress, min(1.0, progress))
        await self._put(force=False)

    async def touch(self) -> None:
        """Rewrite the status with a fresh updated_at_ms: the job is alive."""
        await self._put(force=True)

    async def _put(self, force: bool) -> None:
        now = time.monotonic()
        if not force and now - self._last_put < 0.5:
            return
        self._last_put = now
        self.status.updated_at_ms = now_ms()
        await self._status_kv.put(self.status.job_id, self.status.SerializeToString())

    async def is_canceled(self) -> bool:
        try:
            entry = await self._control_kv.get(topology.cancel_key(self.status.job_id))
        except KeyNotFoundError:
            return False
        if not entry.value:
            return False
        if entry.value.isdigit():
            self.canceled_at_ms = int(entry.value)
        return True

    async def finish(self, status: str, resolution: str, completed_at_ms: int = 0) -> None:
        """Record the final state and publish the event that settles credits; the moment is
        the one the gateway recorded (`completed_at_ms`), the cancel's, or now."""
        self.status.status = status
        self.status.stage = "done"
        canceled_at = self.canceled_at_ms if status == JobStatus.CANCELED else 0
        self.status.completed_at_ms = completed_at_ms or canceled_at or now_ms()
        if status == JobStatus.COMPLETED:
            self.status.progress = 1.0
        await self._put(force=True)
        data = lipsync_pb2.JobEvent(status=self.status, resolution=resolution).SerializeToString()
        await self._js.publish(
            topology.event_subject(self.status.job_id),
            data,
            headers=topology.event_headers(self._signing_key, self.status.job_id, status, data),
        )


async def read_status(status_kv: KeyValue, job_id: str) -> lipsync_pb2.JobStatus | None:
    try:
        entry = await status_kv.get(job_id)
    except KeyNotFoundError:
        return None
    status = lipsync_pb2.JobStatus()
    status.ParseFromString(entry.value or b"")
    return status

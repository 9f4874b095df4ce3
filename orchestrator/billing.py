"""The orchestrator's side of pricing: once the media has been probed, it asks the gateway
(which owns the ledger) to raise the job's reservation to the real price; when the job is
done, it asks the gateway to record the final state before announcing it, so that a late
cancel and a completion cannot both win."""
from __future__ import annotations

from typing import Protocol

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from preprocess.errors import MediaError
from proto import lipsync_pb2, topology
from proto.vocabulary import TERMINAL_STATUSES, ErrorCode


class BillingUnavailable(Exception):
    """The gateway did not answer the reservation request: our error, retried."""


class Billing(Protocol):
    async def reserve(self, job_id: str, output_duration_s: float, resolution: str) -> None: ...

    async def finalize(self, status: lipsync_pb2.JobStatus, resolution: str) -> str:
        """Ask for `status` to become the job's final state: returns the state the gateway
        recorded (the asked one, or the one that won before, e.g. "canceled")."""


class NatsBilling:
    def __init__(self, nc: NATS, timeout_s: float = 10.0) -> None:
        self._nc = nc
        self._timeout_s = timeout_s

    async def reserve(self, job_id: str, output_duration_s: float, resolution: str) -> None:
        request = lipsync_pb2.ReserveRequest(job_id=job_id, output_duration_s=output_duration_s,
                                             resolution=resolution)
        try:
            msg = await self._nc.request(topology.BILLING_RESERVE_SUBJECT,
                                         request.SerializeToString(), timeout=self._timeout_s)
        except (NatsTimeoutError, NoRespondersError) as exc:
            raise BillingUnavailable(f"gateway did not answer the reservation: {exc!r}") from exc
        reply = lipsync_pb2.ReserveReply()
        reply.ParseFromString(msg.data)
        if not reply.ok:
            raise MediaError(reply.error_code or ErrorCode.INSUFFICIENT_CREDITS,
                             reply.error or "Not enough credits for this video")


    async def finalize(self, status: lipsync_pb2.JobStatus, resolution: str) -> str:
        event = lipsync_pb2.JobEvent(status=status, resolution=resolution)
        try:
            msg = await self._nc.request(topology.BILLING_FINALIZE_SUBJECT,
                                         event.SerializeToString(), timeout=self._timeout_s)
        except (NatsTimeoutError, NoRespondersError) as exc:
            raise BillingUnavailable(f"gateway did not answer the finalize request: {exc!r}") from exc
        reply = lipsync_pb2.ReserveReply.FromString(msg.data)
        if reply.ok:
            return status.status
        if reply.error_code in TERMINAL_STATUSES:
            return reply.error_code
        raise BillingUnavailable(f"finalize refused: {reply.error_code} {reply.error}")


class FreeBilling:
    """Test double: every reservation succeeds."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, float, str]] = []

    async def reserve(self, job_id: str, output_duration_s: float, resolution: str) -> None:
        self.calls.append((job_id, output_duration_s, resolution))

    async def finalize(self, status: lipsync_pb2.JobStatus, resolution: str) -> str:
        return status.status

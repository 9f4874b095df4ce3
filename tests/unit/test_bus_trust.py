"""What crosses the bus is trusted only as far as the shared secret key says: job events
carry an HMAC the gateway checks before settling, and webhook secrets travel sealed."""
from __future__ import annotations

import pytest

from proto import lipsync_pb2, topology
from proto.sealed import SealBroken, seal, unseal

KEY = b"shared-secret-key"


def _event(job_id: str, status: str) -> bytes:
    return lipsync_pb2.JobEvent(status=lipsync_pb2.JobStatus(job_id=job_id, status=status)).SerializeToString()


def test_signed_event_verifies_and_any_change_breaks_it() -> None:
    data = _event("job-1", "completed")
    headers = topology.event_headers(KEY, "job-1", "completed", data)
    subject = topology.event_subject("job-1")
    assert headers["Nats-Msg-Id"] == "job-1:completed"
    assert topology.event_authentic(KEY, subject, data, headers)
    assert not topology.event_authentic(b"another-key", subject, data, headers)
    assert not topology.event_authentic(KEY, subject, _event("job-1", "failed"), headers)
    assert not topology.event_authentic(KEY, topology.event_subject("job-2"), data, headers)
    assert not topology.event_authentic(KEY, subject, data, {})
    assert not topology.event_authentic(KEY, subject, data, None)


def test_sealed_secret_opens_only_with_the_key_and_for_its_job() -> None:
    sealed = seal(KEY, "whsec_abc", "job-1")
    assert b"whsec" not in sealed
    assert seal(KEY, "whsec_abc", "job-1") != sealed  # a fresh nonce each time
    assert unseal(KEY, sealed, "job-1") == "whsec_abc"
    with pytest.raises(SealBroken):
        unseal(KEY, sealed, "job-2")
    with pytest.raises(SealBroken):
        unseal(b"another-key", sealed, "job-1")
    with pytest.raises(SealBroken):
        unseal(KEY, sealed[:-1] + bytes([sealed[-1] ^ 1]), "job-1")
    with pytest.raises(SealBroken):
        unseal(KEY, b"short", "job-1")


def test_each_nats_user_may_publish_only_its_side() -> None:
    gateway = topology.NATS_PERMISSIONS["gateway"]["publish"]["allow"]
    orchestrator = topology.NATS_PERMISSIONS["orchestrator"]["publish"]["allow"]
    assert "lipsyncd.events.>" not in gateway and "lipsyncd.events.>" in orchestrator
    assert "lipsyncd.jobs.>" in gateway and "lipsyncd.jobs.>" not in orchestrator
    assert f"$KV.{topology.STATUS_BUCKET}.>" in orchestrator and f"$KV.{topology.STATUS_BUCKET}.>" not in gateway

"""Stage calls spread over several Triton servers: client-side round robin with health checks.

`TritonPool` wraps one per-server client (`orchestrator.stages.TritonStages`) per URL and
offers the same `Stages` methods. Each call goes to the next healthy server; a server that
fails with a transport error (refused, reset, gone mid-request) is marked down, the call is
retried at once on another server, and a background probe brings the server back once its
readiness check passes again. Errors about the request itself (bad tensors, a model error)
are not the server's fault: they are raised as they are, without a retry.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from tritonclient.utils import InferenceServerException

from orchestrator.stages import AudioFeatures, DetectedFace, Rendered, TritonStages
from proto.stages import StageUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
# gRPC codes that mean "this server could not answer", as opposed to "this request is bad".
_SERVER_FAULTS = ("UNAVAILABLE", "CANCELLED", "UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED")


@dataclass
class _Server:
    url: str
    client: TritonStages
    healthy: bool = True
    down_since: float = 0.0
    calls: int = 0
    failures: int = 0


@dataclass
class PoolSettings:
    probe_interval_s: float = 1.0
    # How long a call waits for some server to come back when every one is down, before the
    # job attempt fails (and JetStream redelivers it).
    all_down_wait_s: float = 30.0


def server_fault(exc: StageUnavailable) -> bool:
    """True when the failure says the server, not the request, is at fault."""
    cause = exc.__cause__
    if not isinstance(cause, InferenceServerException):
        return True
    status = str(cause.status() or "")
    message = str(cause.message() or "").lower()
    return any(code in status for code in _SERVER_FAULTS) or "connect" in message or "socket" in message


class TritonPool:
    """The `Stages` of several Triton servers behind one client-side round robin."""

    def __init__(self, urls: Sequence[str], settings: PoolSettings | None = None,
                 client_factory: Callable[[str], TritonStages] = TritonStages) -> None:
        if not urls:
            raise ValueError("TritonPool needs at least one Triton URL")
        self._servers = [_Server(url=url, client=client_factory(url)) for url in urls]
        self._settings = settings or PoolSettings()
        self._turn = itertools.cycle(range(len(self._servers)))
        self._probe: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # Instances per model, read from Triton's model configuration by load_instance_counts().
        self.instances: dict[str, int] = {}

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self._servers]

    def stats(self) -> dict[str, dict[str, int | bool]]:
        return {s.url: {"healthy": s.healthy, "calls": s.calls, "failures": s.failures} for s in self._servers}

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        for server in self._servers:
            await server.client.close()

    async def ready(self) -> bool:
        answers = await asyncio.gather(*(server.client.ready() for server in self._servers))
        for server, ok in zip(self._servers, answers, strict=True):
            self._set_health(server, ok)
        return any(answers)

    def _set_health(self, server: _Server, healthy: bool) -> None:
        if healthy and not server.healthy:
            log.info("triton %s is back after %.1f s", server.url, time.monotonic() - server.down_since)
        elif not healthy and server.healthy:
            server.down_since = time.monotonic()
            log.warning("triton %s is down; its calls go to the other servers", server.url)
        server.healthy = healthy
        self._changed.set()
        if not healthy:
            self._ensure_probe()

    def _ensure_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_down())

    async def _probe_down(self) -> None:
        while any(not s.healthy for s in self._servers):
            await asyncio.sleep(self._settings.probe_interval_s)
            for server in [s for s in self._servers if not s.healthy]:
                if await server.client.ready():
                    self._set_health(server, True)

    async def _pick(self, tried: set[str]) -> _Server:
        """The next healthy server in turn not yet tried for this call; waits while all are down."""
        deadline = time.monotonic() + self._settings.all_down_wait_s
        while True:
            for _ in range(len(self._servers)):
                server = self._servers[next(self._turn)]
                if server.healthy and server.url not in tried:
                    return server
            if time.monotonic() >= deadline:
                raise StageUnavailable(f"no Triton server available of {', '.join(self.urls)}")
            tried.clear()  # every server failed once: try again those that come back
            self._changed.clear()
            self._ensure_probe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.1, deadline - time.monotonic()))

    async def _call(self, call: Callable[[TritonStages], Awaitable[T]]) -> T:
        tried: set[str] = set()
        while True:
            server = await self._pick(tried)
            tried.add(server.url)
            server.calls += 1
            try:
                return await call(server.client)
            except StageUnavailable as exc:
                if not server_fault(exc):
                    raise
                server.failures += 1
                log.warning("triton %s failed a call (%s); retrying on another server", server.url, exc)
                self._set_health(server, False)

    async def load_instance_counts(self) -> dict[str, int]:
        """Instances per stage model, from the model configuration of the first server that
        answers (every server runs the same model repository)."""
        self.instances = await self._call(lambda c: c.load_instance_counts())
        return self.instances

    async def audio_features(self, audio_16k: np.ndarray, fps: float,
                             part: tuple[int, int] = (0, 1)) -> AudioFeatures:
        return await self._call(lambda c: c.audio_features(audio_16k, fps, part=part))

    async def detect_faces(self, image: np.ndarray, max_faces: int = 4,
                           prior_boxes: np.ndarray | None = None) -> list[DetectedFace]:
        return await self._call(lambda c: c.detect_faces(image, max_faces=max_faces, prior_boxes=prior_boxes))

    async def track_faces(self, frames: np.ndarray, max_faces: int = 4,
                          prior_boxes: np.ndarray | None = None) -> list[list[DetectedFace]]:
        return await self._call(lambda c: c.track_faces(frames, max_faces=max_faces, prior_boxes=prior_boxes))

    async def generate(self, source: np.ndarray, source_landmarks: np.ndarray,
                       mouth_params: np.ndarray, motion: np.ndarray,
                       reference: np.ndarray | None = None,
                       reference_landmarks: np.ndarray | None = None,
                       reference_opening: np.ndarray | None = None) -> Rendered:
        return await self._call(lambda c: c.generate(source, source_landmarks, mouth_params, motion,
                                                     reference=reference, reference_landmarks=reference_landmarks,
                                                     reference_opening=reference_opening))

"""Whole jobs through the mesh, measured: client-observed wall time (submit → completed,
polled every 0.2 s), the job's own executionTime and timings, Triton's compute for it, the
peak memory of the orchestrator and Triton process trees, and the facts of the output MP4."""
from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass
from typing import Any

import av
import httpx

from tests.bench import triton_stats
from tests.bench.media import looped_video, speech_wav
from tests.bench.memory import MemoryPeak, TreeSampler, read_pid
from tests.e2e.mesh import Mesh
from tests.servers import MediaServer

POLL_S = 0.2
FINAL = ("completed", "failed", "canceled")


@dataclass(frozen=True)
class JobSpec:
    endpoint: str            # lipsync-image | lipsync-video | lipsync-image-multi
    source: str              # file name in ../shared/media
    resolution: str
    audio_s: float
    sync_mode: str = ""
    video_s: float = 0.0     # dubbing: the source video looped to this length (0: as it is)

    @property
    def label(self) -> str:
        kind = {"lipsync-video": "dub", "lipsync-image-multi": "conversation"}.get(self.endpoint, "image")
        voices = " x2 (in turn)" if self.endpoint == "lipsync-image-multi" else ""
        video = f" of a {self.video_s:g} s video" if self.video_s else ""
        return f"{kind} {self.resolution} {self.audio_s:g} s{voices}{video}"


@dataclass(frozen=True)
class OutputFacts:
    width: int
    height: int
    frames: int
    fps: float
    duration_s: float


@dataclass(frozen=True)
class JobRun:
    spec: JobSpec
    job: dict[str, Any]
    wall_s: float
    triton: triton_stats.Snapshot
    memory: list[MemoryPeak]
    output: OutputFacts | None
    stages: tuple[tuple[float, str], ...] = ()   # (seconds after submission, stage) as polled
    load_avg: float = 0.0                         # the machine's 1-minute load at submission

    def stage_at(self, at_s: float) -> str:
        """The job's stage (as last polled) `at_s` seconds after submission."""
        current = "submitted"
        for since_s, stage in self.stages:
            if since_s > at_s:
                break
            current = stage
        return current

    @property
    def completed(self) -> bool:
        return self.job.get("status") == "completed"

    @property
    def execution_s(self) -> float:
        return float(self.job.get("executionTime") or 0) / 1000

    @property
    def timings_ms(self) -> dict[str, int]:
        return dict(self.job.get("timings") or {})


def _form(spec: JobSpec, media: MediaServer, audio_url: str) -> dict[str, Any]:
    form: dict[str, Any] = {"audio": audio_url, "resolution": spec.resolution, "seed": 1}
    if spec.endpoint == "lipsync-image-multi":
        return {"image": f"{media.url}/{spec.source}", "left_audio": audio_url, "right_audio": audio_url,
                "order": "left_right", "resolution": spec.resolution, "seed": 1}
    if spec.endpoint == "lipsync-video":
        form["video"] = f"{media.url}/{_video_path(spec, media)}"
        form["sync_mode"] = spec.sync_mode or "bounce"
    else:
        form["image"] = f"{media.url}/{spec.source}"
    return form


def _video_path(spec: JobSpec, media: MediaServer) -> str:
    if not spec.video_s:
        return spec.source
    name = f"{spec.source.rsplit('.', 1)[0]}_{spec.video_s:g}s.mp4"
    if name not in media.extra:
        media.extra[name] = (looped_video(spec.source, spec.video_s), "video/mp4")
    return f"extra/{name}"


def output_facts(data: bytes) -> OutputFacts:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        fps = float(stream.average_rate or 0)
        return OutputFacts(stream.codec_context.width, stream.codec_context.height, frames, fps,
                           frames / fps if fps else 0.0)


def run_job(mesh: Mesh, media: MediaServer, key: str, spec: JobSpec, timeout_s: float | None = None) -> JobRun:
    """Submit one job, follow it to its end, and measure it (see the module docstring)."""
    audio_name = f"speech_{spec.audio_s:g}s.wav"
    if audio_name not in media.extra:
        media.extra[audio_name] = (speech_wav(spec.audio_s), "audio/wav")
    body = {"formState": _form(spec, media, f"{media.url}/extra/{audio_name}")}
    triton_url = f"http://127.0.0.1:{mesh.env['LIPSYNCD_TRITON_HTTP_PORT']}"
    roots = {name: pid for name in ("orchestrator", "triton")
             if (pid := read_pid(mesh.home / "run" / f"{name}.pid")) is not None}
    deadline_s = timeout_s or max(300.0, spec.audio_s * 15)
    before = triton_stats.read_stats(triton_url)
    load_avg = os.getloadavg()[0]
    stages: list[tuple[float, str]] = []
    with mesh.client(key) as client, TreeSampler(roots) as sampler:
        started = time.perf_counter()
        answer = client.post(f"/api/v1/{spec.endpoint}", json=body)
        answer.raise_for_status()
        job_id = answer.json()["id"]
        job = _poll(client, job_id, started, started + deadline_s, stages)
        wall_s = time.perf_counter() - started
    delta = triton_stats.difference(before, triton_stats.read_stats(triton_url))
    facts = None
    if job.get("status") == "completed" and job.get("output"):
        facts = output_facts(httpx.get(str(job["output"]), timeout=120).content)
    return JobRun(spec=spec, job=job, wall_s=wall_s, triton=delta, memory=sampler.peaks(), output=facts,
                  stages=tuple(stages), load_avg=load_avg)


def _poll(client: httpx.Client, job_id: str, started: float, deadline: float,
          stages: list[tuple[float, str]]) -> dict[str, Any]:
    """Poll until the job is final; record each change of its `stage`."""
    job: dict[str, Any] = {}
    while time.perf_counter() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        stage = str(job.get("stage") or job.get("status") or "")
        if not stages or stages[-1][1] != stage:
            stages.append((time.perf_counter() - started, stage))
        if job.get("status") in FINAL:
            return job
        time.sleep(POLL_S)
    raise TimeoutError(f"job {job_id} did not finish in time: {job}")

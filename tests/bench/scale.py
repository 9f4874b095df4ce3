"""`make bench-scale`: throughput of the scale-out topology on this machine. For each
(orchestrators, Tritons) pair it starts `make serve` with that many of each (own home, free
ports), submits a burst of short image and video jobs at once, and measures the time from the
first submission to the last completion: jobs per hour in all, per orchestrator and per
Triton. Writes a markdown table.

    python -m tests.bench.scale --out reports/bench-scale.md [--jobs 12] [--configs 1x1,2x1,2x2]
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import platform
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.mesh import Mesh, start_mesh
from tests.servers import MEDIA_DIR, MediaServer

PORTRAITS = ("portrait_photo_a.png", "portrait_photo_b.png", "portrait_art.png", "portrait_painting.png")


@dataclass(frozen=True)
class ScaleRun:
    orchestrators: int
    tritons: int
    jobs: int
    wall_s: float
    load_1m: float

    @property
    def jobs_per_hour(self) -> float:
        return self.jobs * 3600.0 / self.wall_s


def speech(seconds: float) -> bytes:
    with wave.open(str(MEDIA_DIR / "speech_en_1.wav")) as source:
        rate = source.getframerate()
        frames = source.readframes(int(rate * seconds))
        out = io.BytesIO()
        with wave.open(out, "wb") as target:
            target.setnchannels(source.getnchannels())
            target.setsampwidth(source.getsampwidth())
            target.setframerate(rate)
            target.writeframes(frames)
    return out.getvalue()


def run_burst(mesh: Mesh, media: MediaServer, jobs: int) -> float:
    """Submit `jobs` at once (2 image : 1 video), wait for all; the seconds from the first
    submission to the last completion, by the gateway's own timestamps."""
    ids = []
    with mesh.client() as client:
        for i in range(jobs):
            audio = f"{media.url}/extra/speech.wav"
            if i % 3 == 2:
                path, form = "/api/v1/lipsync-video", {"video": f"{media.url}/talk_a.mp4", "audio": audio}
            else:
                path, form = "/api/v1/lipsync-image", {"image": f"{media.url}/{PORTRAITS[i % 4]}", "audio": audio}
            answer = client.post(path, json={"formState": form})
            answer.raise_for_status()
            ids.append(answer.json()["id"])
        finished: dict[str, dict[str, object]] = {}
        while len(finished) < len(ids):
            time.sleep(1.0)  # within the plan's requests per minute
            for job_id in set(ids) - set(finished):
                answer = client.get(f"/api/v1/jobs/{job_id}")
                if answer.status_code == 429:
                    break
                answer.raise_for_status()
                job = answer.json()
                if job["status"] == "processing":
                    continue
                if job["status"] != "completed":
                    raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
                finished[job_id] = job
    first = min(_instant(str(job["created_at"])) for job in finished.values())
    last = max(_instant(str(job["completed_at"])) for job in finished.values())
    return last - first


def _instant(iso: str) -> float:
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def measure(orchestrators: int, tritons: int, jobs: int, media: MediaServer) -> ScaleRun:
    with tempfile.TemporaryDirectory(prefix="lipsyncd-scale-") as home:
        mesh = start_mesh(Path(home), {"LIPSYNCD_ORCHESTRATORS": str(orchestrators),
                                       "LIPSYNCD_TRITONS": str(tritons)})
        try:
            run_burst(mesh, media, 2)  # warm-up: first requests load lazy state
            wall = run_burst(mesh, media, jobs)
            load = os.getloadavg()[0]
        except Exception:
            _print_tails(mesh)  # the home and its logs go with the temporary directory
            raise
        finally:
            mesh.stop()
    return ScaleRun(orchestrators, tritons, jobs, wall, load)


def _print_tails(mesh: Mesh, lines: int = 15) -> None:
    print("\n".join(["--- make serve", *mesh.output[-lines:]]), flush=True)
    for log in sorted((mesh.home / "logs").glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        print("\n".join([f"--- {log.name}", *tail]), flush=True)


def table(runs: list[ScaleRun], audio_s: float) -> str:
    base = runs[0].jobs_per_hour
    lines = [
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} CPU cores; each burst: {runs[0].jobs} jobs at once (2 image : 1 video, "
        f"{audio_s:.0f} s of speech each, 480p), first submission to last completion.",
        "",
        "| orchestrators | Tritons | wall s | jobs/hour | per orchestrator | per Triton | vs 1x1 | load (1 min) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run.orchestrators} | {run.tritons} | {run.wall_s:.1f} | {run.jobs_per_hour:.0f} | "
            f"{run.jobs_per_hour / run.orchestrators:.0f} | {run.jobs_per_hour / run.tritons:.0f} | "
            f"{run.jobs_per_hour / base:.2f}x | {run.load_1m:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("reports/bench-scale.md"))
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--audio-s", type=float, default=2.0)
    parser.add_argument("--configs", default="1x1,2x1,1x2,2x2", help="orchestrators x Tritons, comma-separated")
    args = parser.parse_args()
    media = MediaServer()
    media.extra["speech.wav"] = (speech(args.audio_s), "audio/wav")
    runs = []
    try:
        for config in args.configs.split(","):
            orchestrators, tritons = (int(n) for n in config.split("x"))
            run = measure(orchestrators, tritons, args.jobs, media)
            print(f"{orchestrators}x{tritons}: {run.wall_s:.1f} s, {run.jobs_per_hour:.0f} jobs/hour", flush=True)
            runs.append(run)
    finally:
        media.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Scale-out throughput\n\n" + table(runs, args.audio_s))
    print(args.out.read_text())


if __name__ == "__main__":
    main()

"""`python -m tests.eval.run --out reports/eval.md [--cases a,b] [--skip-mesh]`: measure the
calibration rows, start the mesh (`make serve` in a scratch home) for the mesh cases, submit
each case over the REST API, measure its output, and write the report and contact sheets."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.eval import stability
from tests.eval.cases import Case, all_cases, select
from tests.eval.measure import Evaluator, Measurement
from tests.eval.report import render
from tests.eval.resources import PeakRss
from tests.servers import MEDIA_DIR

logger = logging.getLogger("tests.eval")
JOB_TIMEOUT_S = 900.0
REAL_VIDEOS = ("talk_a.mp4", "talk_b.mp4")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("reports/eval.md"))
    parser.add_argument("--cases", default="", help="comma-separated substrings of case names")
    parser.add_argument("--skip-mesh", action="store_true", help="only the calibration rows")
    parser.add_argument("--keep-videos", type=Path, default=None, metavar="DIR",
                        help="also keep each mesh case's output video in DIR, as <case>.mp4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    cases = select(all_cases(), [p for p in args.cases.split(",") if p], args.skip_mesh)
    report_dir = args.out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    evaluator = Evaluator(MEDIA_DIR, report_dir)
    notes = [f"Load average when the run started: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
             "(RTF and memory are only comparable between runs on an otherwise idle machine)."]
    if not evaluator.embedder.available:
        notes.append("dlib / face_recognition_models not installed: no identity descriptor distance.")
    real_jitter = sum(stability.landmark_jitter(evaluator.source_video(v)[1].tracks[0].landmarks)
                      for v in REAL_VIDEOS) / len(REAL_VIDEOS)
    rows: list[Measurement] = []
    for case in [c for c in cases if not c.needs_mesh]:
        logger.info("measuring %s", case.name)
        rows += evaluator.measure(case)
    mesh_cases = [c for c in cases if c.needs_mesh]
    if mesh_cases:
        rows += _run_mesh_cases(evaluator, mesh_cases, notes, args.keep_videos)
    args.out.write_text(render(rows, real_jitter, notes))
    args.out.with_suffix(".json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=1, default=str))
    logger.info("wrote %s", args.out)
    return 0


def _run_mesh_cases(evaluator: Evaluator, cases: list[Case], notes: list[str],
                     keep: Path | None = None) -> list[Measurement]:
    from tests.e2e.mesh import start_mesh  # noqa: PLC0415 - only when the mesh is wanted
    from tests.servers import MediaServer  # noqa: PLC0415

    rows: list[Measurement] = []
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lipsyncd-eval-") as scratch:
        media = MediaServer()
        try:
            mesh = start_mesh(Path(scratch) / "home")
        except RuntimeError as exc:
            media.close()
            notes.append(f"the mesh did not start; mesh cases not measured: {str(exc).splitlines()[0]}")
            logger.error("%s", exc)
            return rows
        try:
            for case in cases:
                logger.info("submitting %s", case.name)
                try:
                    rows += _run_case(evaluator, mesh, media.url, case, keep or Path(scratch))
                except (RuntimeError, AssertionError, httpx.HTTPError) as exc:
                    notes.append(f"{case.name}: {exc}")
                    logger.error("%s failed: %s", case.name, exc)
        finally:
            mesh.stop()
            media.close()
    return rows


def _run_case(evaluator: Evaluator, mesh: Any, media_url: str, case: Case, scratch: Path) -> list[Measurement]:
    form = {k: (f"{media_url}/{v}" if isinstance(v, str) and "." in v else v) for k, v in case.form.items()}
    with PeakRss(mesh.home) as peak:
        started = time.monotonic()
        with mesh.client() as client:
            answer = client.post(f"/api/v1/{case.endpoint}", json={"formState": form})
        if answer.status_code != 200:
            raise RuntimeError(f"submission answered HTTP {answer.status_code}: {answer.text[:200]}")
        job = mesh.wait_job(answer.json()["id"], timeout_s=JOB_TIMEOUT_S)
    logger.info("%s: %s in %.1f s", case.name, job["status"], time.monotonic() - started)
    if job["status"] != "completed":
        raise RuntimeError(f"job {job['status']}: {job.get('error_code', '')} {job.get('error', '')}")
    video = scratch / f"{case.name}.mp4"
    video.write_bytes(httpx.get(str(job["output"]), timeout=120).content)
    return evaluator.measure(case, video, job, peak.mib)


if __name__ == "__main__":
    raise SystemExit(main())

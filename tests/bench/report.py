"""The benchmark report: one markdown section per measurement, with the definitions of the
derived numbers written next to them."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tests.bench import triton_stats
from tests.bench.api_load import GatewayResults
from tests.bench.http_load import LoadResult
from tests.bench.jobs import JobRun
from tests.bench.memory import PSS, TOTAL, MemoryPeak
from tests.bench.stats import fmt, fmt_percent, markdown_table, ratio

MIB = 1024 * 1024
MEMORY_LIMIT_BYTES = 1.5 * 1024**3
STATUS_GOAL = 0.60
OVERHEAD_GOAL = 0.10


def gateway_section(results: GatewayResults, concurrency: int) -> str:
    base = results.healthz.throughput_rps

    def row(load: LoadResult) -> list[str]:
        codes = ", ".join(f"{code or 'error'}: {n}" for code, n in sorted(load.status_counts.items()))
        return [load.name, fmt(load.throughput_rps), fmt(load.p50_ms), fmt(load.p99_ms),
                fmt_percent(ratio(load.throughput_rps, base)), str(load.ok), str(load.errors), codes,
                fmt_percent(load.client_cpu_share)]

    loads = (results.healthz, results.status, results.submit)
    table = markdown_table(
        ["request", "req/s", "p50 ms", "p99 ms", "vs /healthz", "ok", "not ok", "answers", "load generator CPU"],
        [row(load) for load in loads])
    status_ratio = ratio(results.status.throughput_rps, base)
    verdict = "met" if status_ratio >= STATUS_GOAL else "NOT met"
    drain = ("had not worked through the submitted jobs 10 minutes after the load ended"
             if results.drain_s is None else
             f"worked through the submitted jobs {results.drain_s:.1f} s after the load ended")
    return "\n".join([
        "## 1. Gateway throughput",
        "",
        f"{concurrency} closed-loop clients (asyncio, one keep-alive HTTP/1.1 connection each) for "
        f"{results.healthz.duration_s:.0f} s per request kind, after 1 s of warm-up. The load "
        "generator runs on the same machine as the mesh: its own CPU (share of one core) is shown.",
        "The status target is a completed job; the submissions point at media that answers 404, "
        "so each job fails at download (credits are reserved, then released). "
        f"1-minute load average before the first load: {results.load_avg:.2f}.",
        "",
        table,
        "",
        f"Goal: status ≥ {STATUS_GOAL:.0%} of /healthz: {fmt_percent(status_ratio)}, {verdict}. "
        f"The orchestrator {drain}.",
    ])


@dataclass(frozen=True)
class Overhead:
    wall_s: float
    execution_s: float
    steps_s: float          # sum of the job's timings
    compute_s: float        # Triton compute_input + compute_infer + compute_output
    triton_s: float         # Triton's request time (queue + compute + its handling)
    local_media_s: float    # steps not spent inside Triton
    bus_s: float            # wall − executionTime
    overhead_s: float

    @property
    def ratio(self) -> float:
        return ratio(self.overhead_s, self.wall_s)


def overhead_of(run: JobRun) -> Overhead:
    steps_s = sum(run.timings_ms.values()) / 1000
    compute_s = triton_stats.total_compute_s(run.triton)
    triton_s = triton_stats.total_request_s(run.triton)
    local_media_s = max(0.0, steps_s - triton_s)
    return Overhead(wall_s=run.wall_s, execution_s=run.execution_s, steps_s=steps_s,
                    compute_s=compute_s, triton_s=triton_s, local_media_s=local_media_s,
                    bus_s=run.wall_s - run.execution_s,
                    overhead_s=run.wall_s - compute_s - local_media_s)


def overhead_section(run: JobRun) -> str:
    if not run.completed:
        return f"## 2. Mesh overhead\n\n{run.spec.label} did not complete: {run.job}\n"
    o = overhead_of(run)
    table = markdown_table(
        ["job", "wall s", "executionTime s", "steps s", "stage compute s", "Triton request s",
         "local media work s", "bus/queue s", "overhead s", "overhead ratio", "load avg"],
        [[run.spec.label, fmt(o.wall_s, 2), fmt(o.execution_s, 2), fmt(o.steps_s, 2), fmt(o.compute_s, 2),
          fmt(o.triton_s, 2), fmt(o.local_media_s, 2), fmt(o.bus_s, 2), fmt(o.overhead_s, 2),
          fmt_percent(o.ratio), fmt(run.load_avg, 2)]])
    models = markdown_table(
        ["Triton model", "requests", "compute s", "queue s", "request s"],
        [[name, str(c.requests), fmt(c.compute_ns / 1e9, 3), fmt(c.queue_ns / 1e9, 3), fmt(c.request_ns / 1e9, 3)]
         for name, c in sorted(run.triton.items()) if c.requests])
    timings = ", ".join(f"{name} {ms} ms" for name, ms in run.timings_ms.items())
    verdict = "met" if o.ratio <= OVERHEAD_GOAL else "NOT met"
    return "\n".join([
        "## 2. Mesh overhead",
        "",
        f"One {run.spec.label} job (portrait_photo_a.png + speech_en_1 and the start of speech_en_2), "
        "submitted alone on an idle mesh.",
        "",
        "- wall: client-observed, POST → GET answering `completed` (polled every 0.2 s).",
        "- executionTime: the orchestrator's own time for the job; steps: the sum of its `timings`.",
        "- stage compute: Triton's `compute_input + compute_infer + compute_output` for the job "
        "(statistics API, read before and after); Triton request: its `success` time "
        "(adds queueing and request handling inside Triton).",
        "- local media work: steps − Triton request time (download, decode, resize, blend, encode, "
        "store in the orchestrator; it also holds the client side of the gRPC calls).",
        "- bus/queue: wall − executionTime (gateway, NATS, queueing, status polling); the client "
        "polls every 0.2 s, so wall and this figure are known to about 0.2 s.",
        "- overhead = wall − stage compute − local media work; overhead ratio = overhead / wall.",
        "",
        table,
        "",
        models,
        "",
        f"Job timings: {timings}.",
        "",
        f"Goal: overhead ratio ≤ {OVERHEAD_GOAL:.0%}: {fmt_percent(o.ratio)}, {verdict}.",
    ])


def rtf_section(runs: Sequence[JobRun], floors: dict[str, float]) -> str:
    rows = []
    for run in runs:
        facts = run.output
        if not run.completed or facts is None:
            rows.append([run.spec.label, run.job.get("status", "?"), "", "", "", "", "", "", "", fmt(run.load_avg, 2)])
            continue
        rtf = ratio(run.execution_s, facts.duration_s)
        floor_s = floors.get(run.spec.label, math.nan)
        floor_rtf = ratio(floor_s, facts.duration_s)
        rows.append([run.spec.label, f"{facts.width}x{facts.height}", f"{facts.frames} @ {facts.fps:.2f}",
                     fmt(facts.duration_s, 2), fmt(run.execution_s, 2), fmt(rtf, 2), fmt(floor_s, 2),
                     fmt(floor_rtf, 3), fmt(ratio(rtf, floor_rtf), 1), fmt(run.load_avg, 2)])
    table = markdown_table(
        ["job", "output size", "frames @ fps", "output s", "executionTime s", "RTF", "floor encode s",
         "floor RTF", "RTF / floor", "load avg"], rows)
    return "\n".join([
        "## 3. Real-time factor",
        "",
        "RTF = executionTime / output duration (of the output MP4); each job runs `--repeats` times (3 "
        "unless set) and the run with the median executionTime is shown. Image jobs: portrait_photo_a.png "
        "with speech of the given length; dubbing: talk_a.mp4 with 10 s of speech, sync_mode bounce. "
        "Floor: the same number of frames of one still frame (the image, or the video's first frame) "
        "at the same size, with the same audio, encoded by postprocess.encode.Mp4Writer in the "
        "benchmark process while the mesh is idle. load avg: the machine's 1-minute load average "
        "when the job was submitted (other work on the machine slows jobs down).",
        "",
        table,
    ])


def memory_section(runs: Sequence[JobRun], pairs: Sequence[tuple[str, str]]) -> str:
    """The memory table, and for each (long, short) pair of job labels how the sum peak grows
    from the short job to the long one."""
    rows = []
    totals: dict[str, int] = {}
    rss_totals: dict[str, int] = {}
    for run in runs:
        cells = {peak.name: peak for peak in run.memory}
        orch, triton = cells.get(PSS + "orchestrator"), cells.get(PSS + "triton")
        total, rss_total = cells.get(PSS + TOTAL), cells.get(TOTAL)
        if total is not None:
            totals[run.spec.label] = total.peak_bytes
        if rss_total is not None:
            rss_totals[run.spec.label] = rss_total.peak_bytes
        rows.append([run.spec.label, run.job.get("status", "?"), fmt(run.wall_s, 1),
                     _mib(orch.idle_bytes if orch else None), _peak(run, orch),
                     _mib(triton.idle_bytes if triton else None), _peak(run, triton),
                     _peak(run, total), _peak(run, rss_total), str(total.samples if total else 0),
                     fmt(run.load_avg, 2)])
    table = markdown_table(
        ["job", "status", "wall s", "orchestrator idle MiB", "orchestrator peak MiB (when)", "Triton idle MiB",
         "Triton peak MiB (when)", "sum peak MiB (when)", "RSS sum peak MiB (when)", "samples", "load avg"], rows)
    lines = [
        "## 4. Peak memory",
        "",
        "PSS summed over each process and all its descendants (Triton: tritonserver and its "
        "Python-backend stubs; the orchestrator and its probing child), sampled every 2 s from "
        "/proc while the job ran (RSS every 0.2 s; reading PSS makes the kernel walk every page "
        "table, which at 0.2 s took a quarter of a core from the job); samples = PSS samples; "
        "idle = at submission; sum = both trees added at the same instant; (when) = seconds after "
        "submission and the job's stage then. PSS shares each page among the processes that map "
        "it, so the sum is the memory the mesh holds; the RSS sum, which counts shared pages once "
        "per process, is given as an upper bound.",
        "",
        table,
        "",
    ]
    for long_label, short_label in pairs:
        if long_label in totals and short_label in totals:
            long_b, short_b = totals[long_label], totals[short_label]
            within = long_b <= MEMORY_LIMIT_BYTES
            lines.append(f"{long_label} vs {short_label}: sum peak {_mib(long_b)} vs {_mib(short_b)} MiB "
                         f"(growth {_mib(long_b - short_b)} MiB, ×{ratio(long_b, short_b):.2f}); "
                         f"≤ 1.5 GiB: {'met' if within else 'NOT met'} "
                         f"(RSS sum {_mib(rss_totals.get(long_label))} MiB).")
        else:
            lines.append(f"The {long_label} and {short_label} jobs were not both run (--quick skips them): "
                         "the flatness check needs both; the peaks above are from the jobs that did run.")
        lines.append("")
    return "\n".join(lines)


def _peak(run: JobRun, peak: MemoryPeak | None) -> str:
    if peak is None:
        return "n/a"
    return f"{_mib(peak.peak_bytes)} ({peak.peak_at_s:.0f} s, {run.stage_at(peak.peak_at_s)})"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / MIB:.0f}"

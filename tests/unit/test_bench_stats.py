"""The benchmark's arithmetic: percentiles, ratios, Triton counter deltas, the speech it
builds and the process-tree walk behind its memory numbers."""
from __future__ import annotations

import asyncio
import io
import math
import os
import time
import wave

import numpy as np
import pytest

from tests.bench import triton_stats
from tests.bench.http_load import RequestSpec, read_response
from tests.bench.jobs import JobRun, JobSpec
from tests.bench.media import speech_wav
from tests.bench.memory import MemoryPeak, TreeSampler, descendants, tree_rss_bytes
from tests.bench.report import memory_section, overhead_of
from tests.bench.stats import markdown_table, median, percentile, ratio
from tests.media import media_dir, media_file


def test_percentile_interpolates_between_ranks_like_numpy() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    for fraction in (0.0, 0.25, 0.5, 0.9, 0.99, 1.0):
        assert percentile(values, fraction) == pytest.approx(float(np.percentile(values, fraction * 100)))


def test_percentile_of_one_value_is_that_value_and_of_none_is_nan() -> None:
    assert percentile([7.0], 0.99) == 7.0
    assert math.isnan(percentile([], 0.5))


def test_percentile_rejects_a_fraction_outside_zero_to_one() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 99)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_ratio_is_nan_for_a_zero_denominator() -> None:
    assert ratio(3.0, 4.0) == 0.75
    assert math.isnan(ratio(1.0, 0.0))
    assert math.isnan(ratio(math.nan, 1.0))


def test_markdown_table_has_a_separator_row_per_column() -> None:
    text = markdown_table(["a", "b"], [["1", "2"]])
    assert text.splitlines() == ["| a | b |", "|---|---|", "| 1 | 2 |"]


def _stats(requests: int, compute_ns: int) -> dict[str, object]:
    part = {"count": requests, "ns": compute_ns}
    return {"model_stats": [{"name": "generator", "version": "1", "inference_stats": {
        "success": {"count": requests, "ns": 4 * compute_ns}, "queue": {"count": requests, "ns": 7},
        "compute_input": part, "compute_infer": part, "compute_output": part}}]}


def test_triton_delta_sums_the_three_compute_parts_of_the_job_only() -> None:
    before = triton_stats.parse_stats(_stats(2, 1_000))
    after = triton_stats.parse_stats(_stats(5, 1_000_000_000))
    delta = triton_stats.difference(before, after)
    assert delta["generator"].requests == 3
    assert triton_stats.total_compute_s(delta) == pytest.approx(3 * (1.0 - 1e-6))
    assert triton_stats.total_request_s(delta) == pytest.approx(4 * (1.0 - 1e-6))


def test_overhead_is_wall_minus_stage_compute_minus_local_media_work() -> None:
    ns = 1_000_000_000
    delta = triton_stats.parse_stats(_stats(10, ns))  # 3 s compute, 4 s inside Triton
    run = JobRun(spec=JobSpec("lipsync-image", "p.png", "480p", 10.0),
                 job={"status": "completed", "executionTime": 9000, "timings": {"render": 6000, "analysis": 2000}},
                 wall_s=10.0, triton=delta, memory=[], output=None)
    o = overhead_of(run)
    assert o.local_media_s == pytest.approx(8.0 - 4.0)
    assert o.bus_s == pytest.approx(1.0)
    assert o.overhead_s == pytest.approx(10.0 - 3.0 - 4.0)
    assert o.ratio == pytest.approx(0.3)


def test_speech_is_exactly_as_long_as_asked_and_starts_with_the_first_clip() -> None:
    data = speech_wav(10.0, media_dir())
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getnframes() == 10 * reader.getframerate()
        first = reader.readframes(reader.getframerate())
    with wave.open(str(media_file("speech_en_1.wav"))) as clip:
        assert clip.readframes(clip.getframerate()) == first


def test_process_tree_holds_grandchildren_and_not_siblings() -> None:
    parents = {10: 1, 11: 10, 12: 11, 20: 1}
    assert descendants(10, parents) == {10, 11, 12}


def test_own_process_tree_has_resident_memory() -> None:
    assert tree_rss_bytes(os.getpid()) > 10 * 1024 * 1024


def _reader(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


def test_response_reader_consumes_exactly_one_chunked_response() -> None:
    async def read() -> tuple[tuple[int, bool], bytes]:
        reader = _reader(b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"3\r\nabc\r\n0\r\n\r\nNEXT")
        return await read_response(reader), await reader.read()
    (code, keep), rest = asyncio.run(read())
    assert (code, keep, rest) == (202, True, b"NEXT")


def test_response_reader_honours_content_length_and_connection_close() -> None:
    async def read() -> tuple[tuple[int, bool], bytes]:
        reader = _reader(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}X")
        return await read_response(reader), await reader.read()
    (code, keep), rest = asyncio.run(read())
    assert (code, keep, rest) == (404, False, b"X")


def test_request_spec_sends_json_with_its_length() -> None:
    raw = RequestSpec("POST", "/x", json={"a": 1}, headers={"Authorization": "Bearer k"}).encode("h:1")
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"POST /x HTTP/1.1\r\nHost: h:1")
    assert b"Authorization: Bearer k" in head and f"Content-Length: {len(body)}".encode() in head
    assert body == b'{"a": 1}'


def _run(label_s: float, total_peak_bytes: int) -> JobRun:
    mib = 1024 * 1024
    memory = [MemoryPeak(prefix + "orchestrator", 100 * mib, 200 * mib, 3.0, 10)
              for prefix in ("", "pss:")]
    memory += [MemoryPeak(prefix + "triton", 300 * mib, 400 * mib, 1.0, 10) for prefix in ("", "pss:")]
    memory += [MemoryPeak("total", 400 * mib, total_peak_bytes + mib, 3.0, 10),
               MemoryPeak("pss:total", 400 * mib, total_peak_bytes, 3.0, 10)]
    return JobRun(spec=JobSpec("lipsync-image", "p.png", "480p", label_s), job={"status": "completed"},
                  wall_s=5.0, triton={}, memory=memory, output=None,
                  stages=((0.1, "download"), (0.5, "analysis"), (2.0, "render")))


def test_job_stage_at_a_time_is_the_last_one_polled_before_it() -> None:
    run = _run(60.0, 1)
    assert [run.stage_at(t) for t in (0.0, 0.3, 1.0, 2.0, 99.0)] == [
        "submitted", "download", "analysis", "render", "render"]


def test_memory_report_flags_a_long_job_above_the_limit() -> None:
    gib = 1024**3
    text = memory_section([_run(60.0, gib), _run(600.0, 2 * gib)], [("image 480p 600 s", "image 480p 60 s")])
    assert "≤ 1.5 GiB: NOT met" in text and "growth 1024 MiB" in text
    assert "400 (1 s, analysis)" in text  # Triton's peak, when it happened and in which stage


def test_sampler_sees_this_process_and_sums_the_trees() -> None:
    me = os.getpid()
    with TreeSampler({"a": me, "b": me}, interval_s=0.01, pss_interval_s=0.0) as sampler:
        time.sleep(0.05)
    peaks = {peak.name: peak for peak in sampler.peaks()}
    assert peaks["a"].peak_bytes > 0 and peaks["a"].samples >= 1
    assert peaks["total"].peak_bytes >= peaks["a"].peak_bytes + peaks["b"].peak_bytes - 4 * 1024 * 1024
    # PSS: this process's share of its pages, never more than its RSS
    assert 0 < peaks["pss:a"].peak_bytes <= peaks["a"].peak_bytes
    assert peaks["pss:a"].samples == peaks["a"].samples  # an interval of 0: PSS at every sample


def test_sampler_reads_pss_only_at_its_own_interval() -> None:
    """PSS costs the kernel a walk over every page table: sampled far less often than RSS."""
    me = os.getpid()
    with TreeSampler({"a": me}, interval_s=0.01, pss_interval_s=3600.0) as sampler:
        time.sleep(0.05)
    peaks = {peak.name: peak for peak in sampler.peaks()}
    assert peaks["a"].samples >= 1 and peaks["pss:a"].samples == 0
    assert peaks["pss:a"].peak_bytes == peaks["pss:a"].idle_bytes > 0  # the reading at the start

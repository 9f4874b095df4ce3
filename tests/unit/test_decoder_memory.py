"""The video decoding child runs under a memory cap (RLIMIT_AS, LIPSYNCD_DECODER_MAX_MEMORY_BYTES):
a video whose frames need more than the cap fails that video with `video_too_large`, while
the parent (the orchestrator) is untouched and a video that fits still decodes. The cap is
set relative to what this machine's child needs for a small real video, so the test holds on
any core count."""
from __future__ import annotations

import resource
from pathlib import Path

import av
import numpy as np
import pytest

from orchestrator.settings import OrchestratorSettings
from preprocess.decode import VideoDecoder
from preprocess.errors import MediaError
from proto.vocabulary import ErrorCode
from tests.servers import MEDIA_DIR

SMALL = (MEDIA_DIR / "talk_b.mp4", (854, 480))
LARGE_SIZE = (4096, 2160)
MIN_GAP_MIB = 48  # 4K RGB frames cost ~80 MiB more than 480p ones (measured: 339 vs 423 MiB)


def _vm_peak_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmPeak:"):
            return int(line.split()[1]) // 1024
    raise AssertionError("no VmPeak")


def _peak_while_decoding(path: Path, size: tuple[int, int]) -> tuple[int, int]:
    """The child's address-space peak (sampled while it waits on the pipe) and the frames."""
    decoder = VideoDecoder(0)
    peak = count = 0
    for _ in decoder.frames(path, 25.0, size):
        count += 1
        peak = max(peak, _vm_peak_mib(decoder._child.pid))
    return peak, count


@pytest.fixture(scope="module")
def large_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five 4096x2160 H.264 frames (inside the default pixel limit: only memory is in play)."""
    path = tmp_path_factory.mktemp("decoder") / "large.mp4"
    width, height = LARGE_SIZE
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(5):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[...] = (ramp[None, :, None] + i * 40).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_a_video_over_the_decoders_memory_cap_fails_clearly_and_the_parent_lives(large_video: Path) -> None:
    small_peak, small_frames = _peak_while_decoding(*SMALL)
    large_peak, large_frames = _peak_while_decoding(large_video, LARGE_SIZE)
    assert small_frames == 125 and large_frames == 5
    assert large_peak >= small_peak + MIN_GAP_MIB, (small_peak, large_peak)
    cap = (small_peak + large_peak) // 2 * 2**20  # room for the small video, not for 4K frames
    parent_limit = resource.getrlimit(resource.RLIMIT_AS)

    with pytest.raises(MediaError) as refused:
        list(VideoDecoder(cap).frames(large_video, 25.0, LARGE_SIZE))
    assert refused.value.code == ErrorCode.VIDEO_TOO_LARGE
    assert f"({cap // 2**20} MiB)" in refused.value.message
    # The small video still decodes under the same cap, and the parent was never capped.
    assert sum(1 for _ in VideoDecoder(cap).frames(SMALL[0], 25.0, SMALL[1])) == 125
    assert resource.getrlimit(resource.RLIMIT_AS) == parent_limit


def test_the_cap_is_a_setting_with_a_bounded_default() -> None:
    assert OrchestratorSettings().decoder_max_memory_bytes == 2 * 1024**3
    assert OrchestratorSettings(decoder_max_memory_bytes=0).decoder_max_memory_bytes == 0

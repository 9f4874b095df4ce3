"""Large tensors through Triton's system shared memory (a Triton on the same host): the same
answers as inside gRPC messages, regions reused from request to request, none left in
/dev/shm nor, once the client is closed, on the server, and a region a dead process left
registered is released."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import subprocess
import sys
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as grpc_aio

from orchestrator.stages import TritonStages
from preprocess.align import extract_crop, face_crop_box
from preprocess.decode import iter_video_frames
from proto.stageclient import SHARED_DIR, SHARED_PREFIX, AsyncStageClient
from tests.integration.fixtures_triton import TritonServer
from tests.media import media_file

pytestmark = pytest.mark.integration

FACE_DIR = Path(__file__).resolve().parents[2] / "model_repository" / "face_detection" / "1"
SIDE_PX = 256


def _frames(count: int) -> np.ndarray:
    frames = []
    for frame in iter_video_frames(media_file("talk_a.mp4"), 22.131, (480, 480)):
        frames.append(frame)
        if len(frames) == count:
            break
    return np.stack(frames)


def _regions_on_disk() -> set[str]:
    return {path.name for path in SHARED_DIR.glob(f"{SHARED_PREFIX}{os.getpid()}_*")}


async def _registered(url: str) -> dict[str, object]:
    client = grpc_aio.InferenceServerClient(url=url)
    try:
        return dict((await client.get_system_shared_memory_status(as_json=True)).get("regions", {}))
    finally:
        await client.close()


async def test_tracking_and_transplant_answer_the_same_through_shared_memory(
        stages: TritonStages, triton: TritonServer) -> None:
    shared = TritonStages(triton.grpc_url, shared_memory=True)
    frames = _frames(8)  # 8 x 480 x 480 x 3: 5.5 MB in one tensor
    want = await stages.track_faces(frames, max_faces=1)
    got = await shared.track_faces(frames, max_faces=1)
    assert [len(f) for f in got] == [len(f) for f in want] == [1] * 8
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a[0].landmarks, b[0].landmarks)

    landmarks = np.stack([f[0].landmarks for f in want])
    boxes = [face_crop_box(lm, size=SIDE_PX) for lm in landmarks]
    crops = np.stack([extract_crop(frame, box) for frame, box in zip(frames, boxes, strict=True)])
    crop_landmarks = np.stack([box.to_crop(lm) for box, lm in zip(boxes, landmarks, strict=True)])
    reference, reference_landmarks = crops[::-1].copy(), crop_landmarks[::-1].copy()
    params, motion = np.zeros((8, 8), np.float32), np.zeros((8, 4), np.float32)
    want_out = await stages.generate(crops, crop_landmarks, params, motion, reference, reference_landmarks)
    got_out = await shared.generate(crops, crop_landmarks, params, motion, reference, reference_landmarks)
    np.testing.assert_array_equal(got_out.frames, want_out.frames)  # 1.5 MB each way
    np.testing.assert_array_equal(got_out.masks, want_out.masks)
    assert got_out.masks.max() > 0.5 and shared.client.shared_memory  # it really went the shared way
    def ours() -> set[str]:
        return {name for name in registered if name.startswith(f"{SHARED_PREFIX}{os.getpid()}_")}

    registered = await _registered(triton.grpc_url)
    before = ours()
    assert 1 <= len(before) <= 2  # tracking's region, and the one lent to got_out's arrays
    again = await shared.generate(crops, crop_landmarks, params, motion, reference, reference_landmarks)
    np.testing.assert_array_equal(again.frames, want_out.frames)
    registered = await _registered(triton.grpc_url)
    assert len(ours()) == len(before) + 1  # got_out still holds its region: a new one
    lent = ours()
    del got_out, again
    gc.collect()  # the outputs' region comes back once its arrays are freed ...
    third = await shared.generate(crops, crop_landmarks, params, motion, reference, reference_landmarks)
    np.testing.assert_array_equal(third.masks, want_out.masks)
    registered = await _registered(triton.grpc_url)
    assert ours() == lent  # ... and the next request reuses it
    del third
    assert _regions_on_disk() == set()  # unlinked once the server mapped them
    await shared.close()
    assert not [name for name in await _registered(triton.grpc_url) if name.startswith(f"{SHARED_PREFIX}{os.getpid()}_")]


async def test_a_request_abandoned_mid_way_gives_its_region_back_once_the_server_is_done(
        stages: TritonStages, triton: TritonServer) -> None:
    """A job canceled mid-render abandons its generator request while Triton still runs it:
    the server refuses to let go of that region then, and is asked again on the next request."""
    frames = _frames(1)
    (face,) = (await stages.track_faces(frames, max_faces=1))[0]
    box = face_crop_box(face.landmarks, size=SIDE_PX)
    crop, landmarks = extract_crop(frames[0], box)[None], box.to_crop(face.landmarks)[None]
    count = 400  # ~1 s of rendering; 180 MB of frames and masks through one region
    params, motion = np.zeros((count, 8), np.float32), np.zeros((count, 4), np.float32)
    params[:, 0] = np.linspace(0.0, 1.0, count)
    shared = TritonStages(triton.grpc_url, shared_memory=True)

    def ours(registered: dict[str, object]) -> set[str]:
        return {name for name in registered if name.startswith(f"{SHARED_PREFIX}{os.getpid()}_")}

    render = asyncio.ensure_future(shared.generate(crop, landmarks, params, motion))
    await asyncio.sleep(0.4)
    assert not render.done()
    render.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await render
    abandoned = ours(await _registered(triton.grpc_url))
    assert len(abandoned) == 1  # the server still renders into it
    await asyncio.sleep(3.0)  # the server finishes the abandoned request
    await shared.audio_features(np.zeros(16_000 * 20, np.float32), 25.0)  # 1.3 MB: the shared way
    now = ours(await _registered(triton.grpc_url))
    assert now and not now & abandoned
    await shared.close()
    assert not ours(await _registered(triton.grpc_url))


async def test_a_region_a_dead_process_left_registered_is_released(triton: TritonServer) -> None:
    """Registered on the server, or only made in /dev/shm (killed before handing it over):
    both go on a new client's first request."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    name = f"{SHARED_PREFIX}{dead}_0"
    unhanded = SHARED_DIR / f"{SHARED_PREFIX}{dead}_1"
    unhanded.touch()
    region = shared_memory.SharedMemory(name=name, create=True, size=4096)
    try:
        admin = grpc_aio.InferenceServerClient(url=triton.grpc_url)
        await admin.register_system_shared_memory(name, "/" + name, 4096)
        await admin.close()
        assert name in await _registered(triton.grpc_url)
        client = AsyncStageClient(triton.grpc_url, shared_memory=True)
        await client.infer("audio_features", audio=np.zeros(16_000 * 20, np.float32),  # 1.3 MB: the shared way
                           fps=np.array([25.0], np.float32))
        await client.close()
        assert name not in await _registered(triton.grpc_url)
        assert not (SHARED_DIR / name).exists() and not unhanded.exists()
    finally:
        region.close()
        (SHARED_DIR / name).unlink(missing_ok=True)
        unhanded.unlink(missing_ok=True)


async def test_a_server_that_lost_the_regions_still_answers(triton: TritonServer) -> None:
    """A restarted Triton no longer knows the pooled regions: the request is answered inside
    gRPC messages and the next one registers a new region."""
    client = AsyncStageClient(triton.grpc_url, shared_memory=True)
    audio = np.sin(np.arange(16_000 * 20) / 7).astype(np.float32) * 0.1  # 1.3 MB: the shared way
    fps = np.array([25.0], np.float32)
    first = await client.infer("audio_features", audio=audio, fps=fps)
    ours = [name for name in await _registered(triton.grpc_url) if name.startswith(f"{SHARED_PREFIX}{os.getpid()}_")]
    assert ours
    admin = grpc_aio.InferenceServerClient(url=triton.grpc_url)
    for name in ours:  # as a restart would
        await admin.unregister_system_shared_memory(name)
    await admin.close()
    again = await client.infer("audio_features", audio=audio, fps=fps)
    np.testing.assert_array_equal(again["mouth_params"], first["mouth_params"])
    third = await client.infer("audio_features", audio=audio, fps=fps)
    np.testing.assert_array_equal(third["mouth_params"], first["mouth_params"])
    now = [name for name in await _registered(triton.grpc_url) if name.startswith(f"{SHARED_PREFIX}{os.getpid()}_")]
    assert now and not set(now) & set(ours) and client.shared_memory
    await client.close()


async def test_no_room_in_dev_shm_sends_the_request_inside_grpc(triton: TritonServer,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A full /dev/shm (a container's 64 MB) fails the region's reservation, not the process:
    that request goes inside gRPC messages, and shared memory stays on for the next."""
    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    client = AsyncStageClient(triton.grpc_url, shared_memory=True)
    audio = np.sin(np.arange(16_000 * 20) / 7).astype(np.float32) * 0.1  # 1.3 MB: the shared way
    fps = np.array([25.0], np.float32)
    with monkeypatch.context() as patch:
        patch.setattr(os, "posix_fallocate", full)
        answer = await client.infer("audio_features", audio=audio, fps=fps)
    assert answer["mouth_params"].shape[1] == 8 and client.shared_memory
    assert _regions_on_disk() == set()
    np.testing.assert_array_equal((await client.infer("audio_features", audio=audio, fps=fps))["mouth_params"],
                                  answer["mouth_params"])
    assert [name for name in await _registered(triton.grpc_url) if name.startswith(f"{SHARED_PREFIX}{os.getpid()}_")]
    await client.close()

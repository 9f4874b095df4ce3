"""Clients of the three Triton stages over gRPC, for the orchestrator and for internal teams:
`StageClient` (synchronous) and `AsyncStageClient` (asyncio). Both check each request
against the declared contract (proto/stages.py) before it leaves the process, raise
`StageRequestError` for a request the contract or Triton refuses as invalid (never worth
retrying) and `StageUnavailable` for everything else Triton could not do (retry), and read
each model's instance count from Triton's model-configuration API.

The gRPC connection is one injectable object (`connection=`), so a wrapper can hand in
its own, e.g. a round robin over several Triton servers.

With `shared_memory=True` (a Triton on the same host) the async client passes large tensors
through POSIX shared memory (Triton's system shared-memory extension) instead of inside the
gRPC messages: each is copied once into a region the server maps, where gRPC would
serialise and copy it several times (a 720p dub moves ~0.6 GB of frames and crops)."""
from __future__ import annotations

import itertools
import logging
import os
import threading
import weakref
from collections.abc import Mapping
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpc_sync
import tritonclient.grpc.aio as grpc_aio
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from .stages import STAGE_MODELS, StageRequestError, StageUnavailable, contract

MAX_MESSAGE_BYTES = 512 * 1024 * 1024
DEFAULT_TIMEOUT_S = 300.0
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# gRPC codes that mean "your request is wrong", not "the server could not serve it". Not
# NOT_FOUND: a restarting Triton answers it for a model it has not loaded yet (model names
# are checked against the contracts before sending anyway).
_REQUEST_ERROR_CODES = frozenset({"StatusCode.INVALID_ARGUMENT", "StatusCode.OUT_OF_RANGE"})
SHARED_MIN_BYTES = 1024 * 1024  # tensors at least this large go through shared memory (when on)
SHARED_PREFIX = "lipsyncd_"  # region names: SHARED_PREFIX + pid + "_" + a counter
SHARED_DIR = Path("/dev/shm")  # where POSIX shared memory lives on Linux
SHARED_ROUND_BYTES = 8 * 1024 * 1024  # regions are sized in steps of this
SHARED_IDLE_REGIONS = 2  # idle regions a client keeps registered for its next requests (a 720p render batch: ~90 MB)
_REGIONS = itertools.count()
log = logging.getLogger(__name__)


def stage_error(model: str, exc: InferenceServerException) -> Exception:
    """The exception a Triton error stands for: StageRequestError or StageUnavailable."""
    text = f"{model}: {exc.message()}"
    if str(exc.status()) in _REQUEST_ERROR_CODES:
        return StageRequestError(text)
    return StageUnavailable(text)


def _prepared(model: str, arrays: Mapping[str, Any], outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The request as contiguous arrays, checked against the model's contract."""
    prepared = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    stage = contract(model)
    stage.check_request(prepared, outputs)
    return prepared


def _tensors(module: Any, model: str, arrays: Mapping[str, np.ndarray]) -> list[Any]:
    stage = contract(model)
    tensors = []
    for name, array in arrays.items():
        tensor = module.InferInput(name, list(array.shape), stage.input(name).datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def _instance_count(config: Mapping[str, Any]) -> int:
    groups = config.get("config", config).get("instance_group", [])
    return max(1, sum(int(group.get("count", 1)) for group in groups))


def _output_names(model: str, outputs: tuple[str, ...]) -> tuple[str, ...]:
    return outputs or tuple(t.name for t in contract(model).outputs)


class StageClient:
    """Synchronous client: `StageClient("127.0.0.1:8011").infer("audio_features", audio=..., fps=...)`."""

    def __init__(self, url: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
                 connection: grpc_sync.InferenceServerClient | None = None) -> None:
        if connection is None and not url:
            raise ValueError("give the Triton gRPC address or a connection")
        self.connection = connection or grpc_sync.InferenceServerClient(url=url, channel_args=_CHANNEL_ARGS)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> StageClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer(self, model: str, outputs: tuple[str, ...] = (), **arrays: Any) -> dict[str, np.ndarray]:
        """Run one request; the answer maps each requested output (default: all) to its array."""
        names = _output_names(model, outputs)
        inputs = _tensors(grpc_sync, model, _prepared(model, arrays, names))
        requested = [grpc_sync.InferRequestedOutput(name) for name in names]
        try:
            result = self.connection.infer(model, inputs, outputs=requested, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise stage_error(model, exc) from exc
        return {name: result.as_numpy(name) for name in names}

    def instance_count(self, model: str) -> int:
        """How many instances Triton runs of `model` (its model configuration)."""
        try:
            return _instance_count(self.connection.get_model_config(model, as_json=True))
        except InferenceServerException as exc:
            raise stage_error(model, exc) from exc

    def ready(self) -> bool:
        try:
            return bool(self.connection.is_server_ready()) and all(
                self.connection.is_model_ready(name) for name in STAGE_MODELS)
        except InferenceServerException:
            return False


class AsyncStageClient:
    """The asyncio twin of StageClient (tritonclient.grpc.aio)."""

    def __init__(self, url: str = "", timeout_s: float = DEFAULT_TIMEOUT_S,
                 connection: grpc_aio.InferenceServerClient | None = None, shared_memory: bool = False,
                 shared_min_bytes: int = SHARED_MIN_BYTES) -> None:
        if connection is None and not url:
            raise ValueError("give the Triton gRPC address or a connection")
        self.connection = connection or grpc_aio.InferenceServerClient(url=url, channel_args=_CHANNEL_ARGS)
        self.timeout_s = timeout_s
        self.shared_memory = shared_memory
        self.shared_min_bytes = shared_min_bytes
        self._regions = _RegionPool()

    async def _infer_shared(self, model: str, names: tuple[str, ...], arrays: Mapping[str, np.ndarray],
                            output_bytes: Mapping[str, int]) -> dict[str, np.ndarray] | None:
        """The request with its large tensors in one shared-memory region; None when it has
        none that large, or the server cannot map a region (shared memory is then off)."""
        big_in = [name for name, array in arrays.items() if array.nbytes >= self.shared_min_bytes]
        big_out = [name for name in names if output_bytes.get(name, 0) >= self.shared_min_bytes]
        if not big_in and not big_out:
            return None
        sizes = [arrays[name].nbytes for name in big_in] + [int(output_bytes[name]) for name in big_out]
        offsets = dict(zip(big_in + big_out, np.cumsum([0] + sizes[:-1]).tolist(), strict=True))
        try:
            region = await self._regions.take(sum(sizes), self.connection, self.timeout_s)
        except OSError as exc:  # /dev/shm is full (a container's 64 MB, say): this request goes by gRPC
            log.warning("%s: no room for a %d-byte shared-memory region (%s); this request goes inside gRPC",
                        model, sum(sizes), exc)
            return None
        if region is None:
            log.warning("%s: Triton cannot map shared memory; tensors go inside gRPC messages", model)
            self.shared_memory = False
            return None
        returned = False
        try:
            inputs = []
            for name, array in arrays.items():
                tensor = grpc_aio.InferInput(name, list(array.shape), contract(model).input(name).datatype)
                if name in offsets:
                    np.ndarray(array.shape, array.dtype, buffer=region.buf, offset=offsets[name])[...] = array
                    tensor.set_shared_memory(region.name, array.nbytes, offsets[name])
                else:
                    tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            requested = []
            for name in names:
                output = grpc_aio.InferRequestedOutput(name)
                if name in big_out:
                    output.set_shared_memory(region.name, int(output_bytes[name]), offsets[name])
                requested.append(output)
            try:
                result = await self.connection.infer(model, inputs, outputs=requested, client_timeout=self.timeout_s)
            except InferenceServerException as exc:
                if "shared memory region" in str(exc.message() or "").lower():
                    # The server no longer knows the regions (it restarted): new ones from now
                    # on, and this request inside gRPC messages.
                    log.warning("%s: Triton lost its shared-memory regions (%s); registering new ones",
                                model, exc.message())
                    self._regions.forget()
                    return None
                raise stage_error(model, exc) from exc
            answer: dict[str, np.ndarray] = {}
            for name in names:
                if name in big_out:  # read in place: the region is lent out until these arrays are freed
                    meta = result.get_output(name)
                    answer[name] = self._regions.view(region, offsets[name], [int(d) for d in meta.shape],
                                                      triton_to_np_dtype(meta.datatype))
                else:
                    answer[name] = result.as_numpy(name)
            if not big_out:
                self._regions.give_back(region)
            returned = True
            return answer
        finally:
            if not returned:  # a failed request: the server may be gone, or may have lost it
                await self._regions.discard(region, self.connection)

    async def close(self) -> None:
        await self._regions.close(self.connection)
        await self.connection.close()

    async def infer(self, model: str, outputs: tuple[str, ...] = (), **arrays: Any) -> dict[str, np.ndarray]:
        return await self.infer_arrays(model, outputs, arrays)

    async def infer_arrays(self, model: str, outputs: tuple[str, ...], arrays: Mapping[str, Any],
                           output_bytes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
        """`infer` with the inputs as a mapping; output_bytes: the sizes of outputs known in
        advance, which may then come back through shared memory too (when it is on)."""
        names = _output_names(model, outputs)
        prepared = _prepared(model, arrays, names)
        if self.shared_memory:
            answer = await self._infer_shared(model, names, prepared, output_bytes or {})
            if answer is not None:
                return answer
        inputs = _tensors(grpc_aio, model, prepared)
        requested = [grpc_aio.InferRequestedOutput(name) for name in names]
        try:
            result = await self.connection.infer(model, inputs, outputs=requested, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise stage_error(model, exc) from exc
        return {name: result.as_numpy(name) for name in names}

    async def instance_count(self, model: str) -> int:
        try:
            return _instance_count(await self.connection.get_model_config(model, as_json=True))
        except InferenceServerException as exc:
            raise stage_error(model, exc) from exc

    async def instance_counts(self) -> dict[str, int]:
        return {name: await self.instance_count(name) for name in STAGE_MODELS}

    async def ready(self) -> bool:
        try:
            if not await self.connection.is_server_ready():
                return False
            for name in STAGE_MODELS:
                if not await self.connection.is_model_ready(name):
                    return False
            return True
        except InferenceServerException:
            return False


async def _unregister_name(connection: Any, name: str, timeout_s: float) -> bool:
    """Unregister a region; a server that cannot (gone, or restarted and no longer has it) is
    logged, not raised: the region is freed on this side either way. False when the server
    still uses it (a request abandoned mid-way that it has not finished): then it is to be
    asked again later, or it keeps the region mapped for as long as it runs."""
    try:
        await connection.unregister_system_shared_memory(name, client_timeout=timeout_s)
    except InferenceServerException as exc:
        if "in use" in str(exc.message() or ""):
            return False
        log.info("shared-memory region %s not unregistered: %s", name, exc.message())
    return True


def _reserved_region(name: str, size: int) -> shared_memory.SharedMemory:
    """A new POSIX shared-memory region with all its pages reserved up front: a region larger
    than what /dev/shm has left fails here with OSError (ENOSPC), instead of killing this
    process or the Triton server with SIGBUS when a page is first written."""
    path = SHARED_DIR / name
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError:
        os.close(fd)
        os.unlink(path)
        raise
    os.close(fd)
    return shared_memory.SharedMemory(name=name)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _RegionPool:
    """Shared-memory regions registered with one Triton server, reused from request to
    request (a fresh region costs a page fault per page on both sides, more than the copy it
    saves); at most SHARED_IDLE_REGIONS idle ones are kept. A request's outputs are read in
    place: its region is lent to them and comes back when the last of them is freed. Each
    region is unlinked from /dev/shm as soon as the server has mapped it, so a crash leaves no
    file behind; a region a dead process left registered is released on first use."""

    def __init__(self) -> None:
        self._idle: list[shared_memory.SharedMemory] = []
        self._lent: dict[str, int] = {}  # region name -> output arrays still alive
        self._lock = threading.Lock()  # outputs may be freed on a worker thread
        self._checked = False
        self._retiring: set[str] = set()  # closed here, still in use by the server: unregistered later

    async def take(self, size: int, connection: Any, timeout_s: float) -> shared_memory.SharedMemory | None:
        if not self._checked:
            await self._release_stale(connection)
        for name in list(self._retiring):
            if await _unregister_name(connection, name, timeout_s):
                self._retiring.discard(name)
        with self._lock:
            fits = [region for region in self._idle if region.size >= size]
            region = min(fits, key=lambda r: r.size) if fits else None
            if region is not None:
                self._idle.remove(region)
            excess = sorted(self._idle, key=lambda r: r.size)[:max(0, len(self._idle) - SHARED_IDLE_REGIONS)]
            for old in excess:
                self._idle.remove(old)
        for old in excess:
            await self._unregister(old, connection, timeout_s)
        if region is not None:
            return region
        size = -(-size // SHARED_ROUND_BYTES) * SHARED_ROUND_BYTES  # room for a slightly larger batch
        region = _reserved_region(f"{SHARED_PREFIX}{os.getpid()}_{next(_REGIONS)}", size)
        try:
            await connection.register_system_shared_memory(region.name, "/" + region.name, region.size,
                                                           client_timeout=timeout_s)
        except InferenceServerException:
            region.close()
            region.unlink()
            return None
        region.unlink()  # the server has it mapped; the name is no longer needed
        return region

    def view(self, region: shared_memory.SharedMemory, offset: int, shape: list[int], dtype: Any) -> np.ndarray:
        """An array over part of the region, which stays lent out while it (or any view of it) lives."""
        buffer = region.buf
        assert buffer is not None  # lent regions are never closed
        root = np.frombuffer(buffer, dtype, count=int(np.prod(shape)), offset=offset)
        with self._lock:
            self._lent[region.name] = self._lent.get(region.name, 0) + 1
        weakref.finalize(root, self._returned, region)
        return root.reshape(shape)

    def _returned(self, region: shared_memory.SharedMemory) -> None:
        with self._lock:
            self._lent[region.name] -= 1
            if self._lent[region.name] == 0:
                del self._lent[region.name]
                self._idle.append(region)

    def give_back(self, region: shared_memory.SharedMemory) -> None:
        with self._lock:
            self._idle.append(region)

    async def close(self, connection: Any) -> None:
        """Unregister every region; idle ones are closed (lent ones close with their arrays)."""
        with self._lock:
            idle, self._idle = self._idle, []
            lent = list(self._lent)
        for region in idle:
            await self._unregister(region, connection, 5.0)
        for name in [*lent, *self._retiring]:
            await _unregister_name(connection, name, 5.0)

    def forget(self) -> None:
        """Drop the idle regions without asking the server (it no longer has them)."""
        with self._lock:
            idle, self._idle = self._idle, []
        self._retiring.clear()
        for region in idle:
            region.close()

    async def discard(self, region: shared_memory.SharedMemory, connection: Any) -> None:
        """A region whose request failed (no array over it): unregistered where the server still answers, closed."""
        await self._unregister(region, connection, 5.0)

    async def _unregister(self, region: shared_memory.SharedMemory, connection: Any, timeout_s: float) -> None:
        if not await _unregister_name(connection, region.name, timeout_s):
            self._retiring.add(region.name)
        region.close()

    async def _release_stale(self, connection: Any) -> None:
        self._checked = True
        try:
            status = await connection.get_system_shared_memory_status(as_json=True)
        except InferenceServerException as exc:
            log.warning("Triton's shared-memory regions could not be listed (%s); stale ones stay", exc.message())
            return
        for name in status.get("regions", {}):
            if _dead_owner(name):
                await _unregister_name(connection, name, DEFAULT_TIMEOUT_S)
        # a file a killed client made but had not yet handed over (and unlinked)
        for path in SHARED_DIR.glob(f"{SHARED_PREFIX}*"):
            if _dead_owner(path.name):
                path.unlink(missing_ok=True)


def _dead_owner(name: str) -> bool:
    """Whether a region is one of this client's kind whose process is gone."""
    pid = name.removeprefix(SHARED_PREFIX).split("_")[0]
    return name.startswith(SHARED_PREFIX) and pid.isdigit() and not pid_alive(int(pid))

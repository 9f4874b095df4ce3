"""Clients of the three Triton stages over gRPC, for the orchestrator and for internal teams:
`StageClient` (synchronous) and `AsyncStageClient` (asyncio). Both check each request
against the declared contract (proto/stages.py) before it leaves the process, raise
`StageRequestError` for a request the contract or Triton refuses as invalid (never worth
retrying) and `StageUnavailable` for everything else Triton could not do (retry), and read
each model's instance count from Triton's model-configuration API.

The gRPC connection is one injectable object (`connection=`), so a wrapper can hand in
its own, e.g. a round robin over several Triton servers."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import tritonclient.grpc as grpc_sync
import tritonclient.grpc.aio as grpc_aio
from tritonclient.utils import InferenceServerException

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
                 connection: grpc_aio.InferenceServerClient | None = None) -> None:
        if connection is None and not url:
            raise ValueError("give the Triton gRPC address or a connection")
        self.connection = connection or grpc_aio.InferenceServerClient(url=url, channel_args=_CHANNEL_ARGS)
        self.timeout_s = timeout_s

    async def close(self) -> None:
        await self.connection.close()

    async def infer(self, model: str, outputs: tuple[str, ...] = (), **arrays: Any) -> dict[str, np.ndarray]:
        names = _output_names(model, outputs)
        inputs = _tensors(grpc_aio, model, _prepared(model, arrays, names))
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

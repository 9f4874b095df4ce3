"""How a stage model refuses a request: one INVALID_ARG answer, which reaches the caller as a
request error (`proto.stageclient` raises StageRequestError for it, and it is never retried)."""
from __future__ import annotations

from typing import Any


def refusal(pb_utils: Any, message: str) -> Any:
    """The InferenceResponse that refuses a request with `message`. pb_utils: the stub's
    triton_python_backend_utils, which only a Triton Python-backend model can import."""
    return pb_utils.InferenceResponse(output_tensors=[],
                                      error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))

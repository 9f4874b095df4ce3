"""The user's errors: bad media that fails a job with a stable `error_code` and a message
phrased for the person who submitted it (never retried, never charged)."""
from __future__ import annotations


class MediaError(Exception):
    """Bad input media; `code` is the stable machine code put in the job's `error_code`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

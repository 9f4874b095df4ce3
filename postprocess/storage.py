"""Where job files live: a `Storage` interface over keyed blobs (uploads and result MP4s),
the local-directory default, an in-memory double for tests, and the signed-URL scheme the
gateway uses to serve them. An S3-compatible backend will implement the same Protocol
(`local_path` then returns None and the gateway redirects to a presigned S3 URL instead)."""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import BinaryIO, Protocol

# No segment starts with a dot, so "..", "." and our own ".tmp-*" files are never
# addressable; no backslashes, no empty segments, no leading slash.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY_PATTERN = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
MAX_KEY_LENGTH = 512
_COPY_CHUNK_BYTES = 1024 * 1024


class InvalidKey(ValueError):
    """A storage key that could escape the storage root or is otherwise malformed."""


def validate_key(key: str) -> str:
    """Return the key unchanged if it is a safe relative name like "outputs/<job>.mp4"."""
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid storage key: {key!r}")
    if _KEY_PATTERN.fullmatch(key) is None or ".." in key.split("/"):
        raise InvalidKey(f"invalid storage key: {key!r}")
    return key


class Storage(Protocol):
    def put_file(self, key: str, src: Path) -> None:
        """Store a copy of `src` under `key`, replacing any previous blob atomically."""

    def open_read(self, key: str) -> BinaryIO:
        """Open the blob for reading; raises FileNotFoundError if it does not exist."""

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Size in bytes; raises FileNotFoundError if it does not exist."""

    def local_path(self, key: str) -> Path | None:
        """The blob's path on this machine's disk, or None if the backend has none."""

    def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing key is not an error (idempotent)."""

    def delete_older_than(self, prefix: str, cutoff_epoch_s: float) -> int:
        """Remove every blob under `prefix` (e.g. "outputs/") last written before the
        cutoff (seconds since the epoch); returns how many were removed."""


class LocalStorage:
    """Blobs as files under `root`; writes go to a temp file in the target's directory and
    are moved into place with os.replace, so readers never see a half-written file."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        if not path.is_relative_to(self.root):  # symlinks inside root pointing out of it
            raise InvalidKey(f"invalid storage key: {key!r}")
        return path

    def put_file(self, key: str, src: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as source:
                shutil.copyfileobj(source, out, _COPY_CHUNK_BYTES)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def open_read(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        return path.stat().st_size

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.is_file() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_older_than(self, prefix: str, cutoff_epoch_s: float) -> int:
        top = self._path(prefix.rstrip("/"))
        removed = 0
        # Bottom-up, so that directories emptied here (an upload's uuid folder) go too;
        # our own ".tmp-*" files of an interrupted write are swept as well.
        for folder, _dirs, names in os.walk(top, topdown=False):
            for name in names:
                path = Path(folder) / name
                try:
                    if path.lstat().st_mtime < cutoff_epoch_s:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue  # removed meanwhile by another sweeper
            if Path(folder) != top:
                with contextlib.suppress(OSError):  # not empty: it keeps a newer file
                    Path(folder).rmdir()
        return removed


class MemoryStorage:
    """Test double: blobs in a dict, with the same key rules as LocalStorage."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.written_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._lock:
            self.blobs[validate_key(key)] = bytes(data)
            self.written_at[key] = time.time()

    def put_file(self, key: str, src: Path) -> None:
        self.put_bytes(key, Path(src).read_bytes())

    def open_read(self, key: str) -> BinaryIO:
        with self._lock:
            data = self.blobs.get(validate_key(key))
        if data is None:
            raise FileNotFoundError(key)
        return io.BytesIO(data)

    def exists(self, key: str) -> bool:
        return validate_key(key) in self.blobs

    def size(self, key: str) -> int:
        data = self.blobs.get(validate_key(key))
        if data is None:
            raise FileNotFoundError(key)
        return len(data)

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def delete(self, key: str) -> None:
        with self._lock:
            self.blobs.pop(validate_key(key), None)
            self.written_at.pop(key, None)

    def delete_older_than(self, prefix: str, cutoff_epoch_s: float) -> int:
        with self._lock:
            old = [k for k, at in self.written_at.items() if k.startswith(prefix) and at < cutoff_epoch_s]
            for key in old:
                self.blobs.pop(key, None)
                self.written_at.pop(key, None)
        return len(old)


def _url_signature(key: str, expires_at: int, secret_key: bytes) -> str:
    return hmac.new(secret_key, f"{key}:{expires_at}".encode(), hashlib.sha256).hexdigest()


def sign_url(base_url: str, key: str, secret_key: bytes, expires_at: int) -> str:
    """A download URL for `key` that the gateway honours until `expires_at` (unix seconds)."""
    validate_key(key)
    signature = _url_signature(key, int(expires_at), secret_key)
    return f"{base_url.rstrip('/')}/files/{key}?expires={int(expires_at)}&signature={signature}"


def verify_signature(
    key: str, expires: int | str, signature: str, secret_key: bytes, now: float
) -> bool:
    """True if `signature` was made by sign_url for this key and has not expired at `now`."""
    try:
        validate_key(key)
        expires_at = int(expires)
    except (InvalidKey, ValueError, TypeError):
        return False
    if now > expires_at or not isinstance(signature, str):
        return False
    expected = _url_signature(key, expires_at, secret_key)
    return hmac.compare_digest(expected.encode(), signature.encode())

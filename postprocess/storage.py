"""Where job files live: a `Storage` interface over keyed blobs (uploads and result MP4s),
the local-directory default, an S3-compatible object store (`s3://bucket/prefix`, through
boto3), an in-memory double for tests, and the signed-URL scheme the gateway uses to serve
them. The gateway serves local blobs itself; for S3 blobs (`local_path` is None) it answers
its signed URL with a redirect to a short presigned S3 GET (`presigned_get_url`)."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar
from urllib.parse import urlsplit

from proto.urlsign import UrlSigner

log = logging.getLogger(__name__)

# No segment starts with a dot, so "..", "." and our own ".tmp-*" files are never
# addressable; no backslashes, no empty segments, no leading slash.
_SEGMENT = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
_KEY_PATTERN = re.compile(rf"{_SEGMENT}(/{_SEGMENT})*")
MAX_KEY_LENGTH = 512
_COPY_CHUNK_BYTES = 1024 * 1024
# S3 multipart parts (S3's minimum is 5 MiB): the most a streaming write holds in memory.
S3_PART_BYTES = 8 * 1024 * 1024
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_TTL_S = 7 * 24 * 3600


class InvalidKey(ValueError):
    """A storage key that could escape the storage root or is otherwise malformed."""


class StorageUnavailable(RuntimeError):
    """The configured storage cannot be used (no such bucket, unreachable endpoint, bad URL)."""


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

    def open_write(self, key: str) -> BlobWriter:
        """A writer for streaming a new blob in chunks: it appears under `key` only when the
        `with` block ends without an exception; otherwise nothing is stored."""

    def presigned_get_url(self, key: str, ttl_s: int) -> str | None:
        """A URL that fetches the blob directly from the store for `ttl_s` seconds, or None
        when the backend has no such URL (the gateway then serves the bytes itself)."""

    def check(self) -> None:
        """Raise StorageUnavailable, with the reason, if the store cannot be used."""

    def delete_older_than(self, prefix: str, cutoff_epoch_s: float) -> int:
        """Remove every blob under `prefix` (e.g. "outputs/") last written before the
        cutoff (seconds since the epoch); returns how many were removed."""


class BlobWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: types.TracebackType | None) -> None: ...


_Writer = TypeVar("_Writer", bound="_WriterBase")


class _WriterBase:
    """`with` protocol for writers: commit on a clean exit, abort on an exception."""

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: types.TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class _LocalWriter(_WriterBase):
    def __init__(self, target: Path) -> None:
        self._target = target
        self._made_parent = not target.parent.exists()  # removed again if nothing is stored
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        self._tmp = Path(tmp_name)
        self._file = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def commit(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.chmod(self._tmp, 0o600)  # owner-only, as all state under LIPSYNCD_HOME
            os.replace(self._tmp, self._target)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)
        if self._made_parent:
            try:
                self._target.parent.rmdir()
            except OSError as exc:  # another blob was stored there meanwhile
                log.debug("kept %s: %s", self._target.parent, exc)


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
            os.chmod(tmp_name, 0o600)  # owner-only
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

    def open_write(self, key: str) -> BlobWriter:
        return _LocalWriter(self._path(key))

    def presigned_get_url(self, key: str, ttl_s: int) -> str | None:
        validate_key(key)
        return None

    def check(self) -> None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            raise StorageUnavailable(f"storage directory {self.root} is not a writable directory")

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


class _MemoryWriter(_WriterBase):
    def __init__(self, storage: MemoryStorage, key: str) -> None:
        self._storage = storage
        self._key = key
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data

    def commit(self) -> None:
        self._storage.put_bytes(self._key, bytes(self._buffer))

    def abort(self) -> None:
        self._buffer.clear()


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

    def open_write(self, key: str) -> BlobWriter:
        return _MemoryWriter(self, validate_key(key))

    def presigned_get_url(self, key: str, ttl_s: int) -> str | None:
        validate_key(key)
        return None

    def check(self) -> None:
        return None


@dataclass(frozen=True)
class S3Config:
    """Where the S3-compatible service is and who we are there (AWS_ENDPOINT_URL,
    AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, read by settings.py);
    None leaves the value to boto3's own defaults."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None


def _is_not_found(error: Exception) -> bool:
    from botocore.exceptions import ClientError  # noqa: PLC0415 - boto3 only for S3

    if not isinstance(error, ClientError):
        return False
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class _S3Writer(_WriterBase):
    """Multipart upload with at most one part (S3_PART_BYTES) buffered; a blob smaller than
    one part is stored with a single PUT. Aborting drops the parts already uploaded."""

    def __init__(self, client: Any, bucket: str, name: str, part_bytes: int) -> None:
        self._client = client
        self._bucket = bucket
        self._name = name
        self._part_bytes = part_bytes
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, object]] = []

    def write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= self._part_bytes:
            part = bytes(self._buffer[: self._part_bytes])
            del self._buffer[: self._part_bytes]
            self._upload_part(part)

    def _upload_part(self, body: bytes) -> None:
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._name)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        answer = self._client.upload_part(Bucket=self._bucket, Key=self._name, PartNumber=number,
                                          UploadId=self._upload_id, Body=body)
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def commit(self) -> None:
        try:
            if self._upload_id is None:
                self._client.put_object(Bucket=self._bucket, Key=self._name, Body=bytes(self._buffer))
                return
            if self._buffer:
                self._upload_part(bytes(self._buffer))
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._name, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except BaseException:
            self.abort()
            raise
        finally:
            self._buffer = bytearray()

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._name, UploadId=upload_id)


class S3Storage:
    """Blobs as objects `<prefix>/<key>` in an existing bucket of an S3-compatible service.
    Whole-object writes are atomic in S3 (a PUT or a completed multipart upload), so readers
    never see half a blob. Large files go up in parts of S3_PART_BYTES."""

    def __init__(self, bucket: str, prefix: str, config: S3Config,
                 part_bytes: int = S3_PART_BYTES) -> None:
        import boto3  # noqa: PLC0415 - only deployments that use S3 pay for the import
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415
        from botocore.config import Config  # noqa: PLC0415

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.config = config
        self._part_bytes = part_bytes
        self._transfer = TransferConfig(multipart_threshold=part_bytes, multipart_chunksize=part_bytes,
                                        max_concurrency=2)
        # Path-style addressing for a custom endpoint (MinIO, moto, Ceph...) whose host name
        # is not a wildcard DNS name; AWS itself picks virtual-hosted style.
        addressing = "path" if config.endpoint_url else "auto"
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.endpoint_url,
            region_name=config.region,
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": addressing},
                          retries={"max_attempts": 3, "mode": "standard"},
                          max_pool_connections=20),
        )

    @classmethod
    def from_url(cls, url: str, config: S3Config) -> S3Storage:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise StorageUnavailable(f"LIPSYNCD_STORAGE_URL {url!r} is not of the form s3://bucket/prefix")
        return cls(parts.netloc, parts.path, config)

    def _name(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, src: Path) -> None:
        self.client.upload_file(str(src), self.bucket, self._name(key), Config=self._transfer)

    def open_read(self, key: str) -> BinaryIO:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(key) from exc
            raise
        body: BinaryIO = answer["Body"]
        return body

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        except Exception as exc:
            if _is_not_found(exc):
                raise FileNotFoundError(key) from exc
            raise
        return int(answer["ContentLength"])

    def local_path(self, key: str) -> Path | None:
        validate_key(key)
        return None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def open_write(self, key: str) -> BlobWriter:
        return _S3Writer(self.client, self.bucket, self._name(key), self._part_bytes)

    def presigned_get_url(self, key: str, ttl_s: int) -> str | None:
        ttl_s = max(1, min(int(ttl_s), MAX_PRESIGN_TTL_S))
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._name(key)}, ExpiresIn=ttl_s
        )
        return url

    def delete_older_than(self, prefix: str, cutoff_epoch_s: float) -> int:
        listing_prefix = self._name(prefix.rstrip("/")) + "/"
        removed = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket,
                                                                      Prefix=listing_prefix)
        for page in pages:
            old = [{"Key": item["Key"]} for item in page.get("Contents", [])
                   if item["LastModified"].timestamp() < cutoff_epoch_s]
            if old:  # at most 1000 a page, the most one DeleteObjects call takes
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": old, "Quiet": True})
                removed += len(old)
        return removed

    def check(self) -> None:
        where = self.config.endpoint_url or "AWS S3"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _is_not_found(exc):
                raise StorageUnavailable(
                    f"LIPSYNCD_STORAGE_URL: bucket {self.bucket!r} does not exist at {where}; "
                    "create it first (lipsyncd never creates buckets)"
                ) from exc
            raise StorageUnavailable(
                f"LIPSYNCD_STORAGE_URL: bucket {self.bucket!r} at {where} cannot be used: {exc}"
            ) from exc


def open_storage(storage_url: str, local_root: Path, s3: S3Config) -> Storage:
    """The backend LIPSYNCD_STORAGE_URL names: empty for the local directory `local_root`
    (the default), `s3://bucket/prefix` for an S3-compatible object store."""
    if not storage_url:
        return LocalStorage(local_root)
    if storage_url.startswith("s3://"):
        return S3Storage.from_url(storage_url, s3)
    raise StorageUnavailable(
        f"LIPSYNCD_STORAGE_URL {storage_url!r}: only s3://bucket/prefix is supported "
        "(leave it empty for the local directory LIPSYNCD_STORAGE_DIR)"
    )


def sign_url(base_url: str, key: str, secret_key: bytes, expires_at: int) -> str:
    """A download URL for `key` that the gateway honours until `expires_at` (unix seconds)."""
    return UrlSigner(secret_key, base_url).url_until(validate_key(key), expires_at)


def verify_signature(
    key: str, expires: int | str, signature: str, secret_key: bytes, now: float
) -> bool:
    """True if `signature` was made by sign_url for this key and has not expired at `now`."""
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return UrlSigner(secret_key, "").verify(key, expires, signature, now_s=now)

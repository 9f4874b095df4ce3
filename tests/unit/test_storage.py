"""Unit tests for postprocess/storage.py: key rules, the storage contract run against every
backend (local directory, in-memory double, and S3 against a real moto server over HTTP),
atomic local writes, streaming multipart writes, presigned URLs, and signed file URLs."""
from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from postprocess.storage import (
    InvalidKey,
    LocalStorage,
    MemoryStorage,
    S3Config,
    S3Storage,
    StorageUnavailable,
    open_storage,
    sign_url,
    validate_key,
    verify_signature,
)
from tests.s3server import s3_server  # noqa: F401 - fixture

BAD_KEYS = ["", "/etc/passwd", "../secret", "a/../../b", "a/./b", "a//b", "a/", ".hidden",
            "a/.tmp-x", "a\\b", "a\x00b", "C:/x", "x" * 600, "a b", "ü.mp4"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_unsafe_keys_are_rejected(key):
    with pytest.raises(InvalidKey):
        validate_key(key)


@pytest.mark.parametrize("key", ["a", "outputs/550e8400-e29b.mp4", "uploads/acct_1/x.v2.png",
                                 "uploads/550e8400/-dash_.png", "_x/y"])
def test_ordinary_keys_are_accepted(key):
    assert validate_key(key) == key


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request, tmp_path):
    if request.param == "local":
        return LocalStorage(tmp_path / "root")
    if request.param == "memory":
        return MemoryStorage()
    server = request.getfixturevalue("s3_server")
    # A small part size so that a few hundred KiB already take the multipart path.
    return S3Storage(server.create_bucket(), "pre/fix", server.config, part_bytes=5 * 1024 * 1024)


def test_put_then_read_back(storage, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello world")
    storage.put_file("outputs/job1.mp4", src)
    assert storage.exists("outputs/job1.mp4")
    assert storage.size("outputs/job1.mp4") == 11
    with storage.open_read("outputs/job1.mp4") as f:
        assert f.read() == b"hello world"
    src.write_bytes(b"changed")  # the store keeps its own copy
    with storage.open_read("outputs/job1.mp4") as f:
        assert f.read() == b"hello world"


def test_missing_keys_raise_file_not_found(storage):
    assert not storage.exists("nope")
    with pytest.raises(FileNotFoundError):
        storage.open_read("nope")
    with pytest.raises(FileNotFoundError):
        storage.size("nope")


def test_delete_is_idempotent(storage, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"x")
    storage.put_file("k", src)
    storage.delete("k")
    storage.delete("k")
    assert not storage.exists("k")


@pytest.mark.parametrize("key", ["../escape", "/abs"])
def test_every_operation_validates_keys(storage, tmp_path, key):
    src = tmp_path / "s"
    src.write_bytes(b"x")
    for op in (lambda: storage.put_file(key, src), lambda: storage.open_read(key),
               lambda: storage.exists(key), lambda: storage.size(key),
               lambda: storage.local_path(key), lambda: storage.delete(key),
               lambda: storage.open_write(key), lambda: storage.presigned_get_url(key, 60)):
        with pytest.raises(InvalidKey):
            op()
    assert not (tmp_path / "escape").exists()


def test_local_storage_replaces_atomically_and_leaves_no_temp_files(tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path / "root")
    first, second = tmp_path / "1", tmp_path / "2"
    first.write_bytes(b"first version")
    second.write_bytes(b"second version")
    storage.put_file("out/a.mp4", first)

    replaced = []
    real_replace = os.replace

    def spy_replace(src, dst):
        # At the moment of the swap the old content must still be fully readable.
        assert Path(dst).read_bytes() == b"first version"
        assert Path(src).parent == Path(dst).parent  # same directory: a rename, not a copy
        replaced.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy_replace)
    storage.put_file("out/a.mp4", second)
    assert len(replaced) == 1
    assert storage.local_path("out/a.mp4").read_bytes() == b"second version"
    assert sorted(p.name for p in (tmp_path / "root" / "out").iterdir()) == ["a.mp4"]


def test_failed_local_write_keeps_the_old_blob_and_cleans_up(tmp_path):
    storage = LocalStorage(tmp_path / "root")
    good = tmp_path / "good"
    good.write_bytes(b"good")
    storage.put_file("k.mp4", good)
    with pytest.raises(FileNotFoundError):
        storage.put_file("k.mp4", tmp_path / "does-not-exist")
    assert storage.local_path("k.mp4").read_bytes() == b"good"
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["k.mp4"]


def test_local_storage_refuses_symlinks_out_of_the_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"s")
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    storage = LocalStorage(root)
    with pytest.raises(InvalidKey):
        storage.open_read("link/secret")


def test_local_path_is_only_given_for_local_files(tmp_path):
    local = LocalStorage(tmp_path / "root")
    src = tmp_path / "s"
    src.write_bytes(b"x")
    local.put_file("a/b", src)
    assert local.local_path("a/b") == (tmp_path / "root" / "a" / "b").resolve()
    assert local.local_path("a/c") is None
    memory = MemoryStorage()
    memory.put_file("a/b", src)
    assert memory.local_path("a/b") is None


def test_streamed_write_appears_only_when_complete(storage):
    chunk = os.urandom(1024 * 1024)
    writer = storage.open_write("uploads/u1/big.bin")
    with writer:
        for _ in range(11):  # 11 MiB: three parts of 5 MiB on S3
            writer.write(chunk)
        assert not storage.exists("uploads/u1/big.bin")
    assert storage.size("uploads/u1/big.bin") == 11 * len(chunk)
    with storage.open_read("uploads/u1/big.bin") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(chunk * 11).digest()


@pytest.mark.parametrize("size", [0, 3, 5 * 1024 * 1024])
def test_streamed_write_of_small_and_exact_part_sizes(storage, size):
    data = os.urandom(size)
    with storage.open_write("k/small") as writer:
        writer.write(data)
    with storage.open_read("k/small") as f:
        assert f.read() == data


def test_failed_streamed_write_stores_nothing(storage):
    with pytest.raises(RuntimeError), storage.open_write("uploads/u2/x.bin") as writer:
        writer.write(os.urandom(6 * 1024 * 1024))  # one part already sent on S3
        raise RuntimeError("client went away")
    assert not storage.exists("uploads/u2/x.bin")
    if isinstance(storage, S3Storage):  # the parts were dropped, not left to be billed
        uploads = storage.client.list_multipart_uploads(Bucket=storage.bucket)
        assert uploads.get("Uploads", []) == []


def test_check_passes_for_a_usable_store(storage):
    storage.check()


def test_s3_objects_live_under_the_prefix_and_presigned_urls_fetch_them(s3_server, tmp_path):
    bucket = s3_server.create_bucket()
    storage = S3Storage(bucket, "/lipsyncd/", s3_server.config)
    src = tmp_path / "s"
    src.write_bytes(b"presigned bytes")
    storage.put_file("outputs/j.mp4", src)
    listed = storage.client.list_objects_v2(Bucket=bucket)["Contents"]
    assert [item["Key"] for item in listed] == ["lipsyncd/outputs/j.mp4"]
    url = storage.presigned_get_url("outputs/j.mp4", 600)
    assert url is not None and url.startswith(s3_server.endpoint_url)
    answer = httpx.get(url)
    assert answer.status_code == 200 and answer.content == b"presigned bytes"
    query = parse_qs(urlsplit(url).query)  # moto does not check signatures; S3 does
    assert query["X-Amz-Expires"] == ["600"] and query["X-Amz-Signature"]
    assert storage.presigned_get_url("outputs/j.mp4", 10**9).count("X-Amz-Expires=604800") == 1


def test_local_backends_have_no_presigned_urls(tmp_path):
    assert LocalStorage(tmp_path).presigned_get_url("a", 60) is None
    assert MemoryStorage().presigned_get_url("a", 60) is None


def test_missing_bucket_fails_clearly(s3_server):
    storage = open_storage("s3://no-such-bucket-here/p", Path("/unused"), s3_server.config)
    with pytest.raises(StorageUnavailable, match="bucket 'no-such-bucket-here' does not exist"):
        storage.check()


def test_unreachable_endpoint_fails_clearly():
    from tests.servers import free_port  # noqa: PLC0415

    config = S3Config(endpoint_url=f"http://127.0.0.1:{free_port()}", region="us-east-1",
                      access_key_id="a", secret_access_key="b")
    with pytest.raises(StorageUnavailable, match="cannot be used"):
        S3Storage("bucket", "", config).check()


@pytest.mark.parametrize("url", ["s3://", "gs://bucket/x", "file:///tmp/x"])
def test_unsupported_storage_urls_are_refused(url):
    with pytest.raises(StorageUnavailable, match="LIPSYNCD_STORAGE_URL"):
        open_storage(url, Path("/unused"), S3Config())


def test_empty_storage_url_is_the_local_directory(tmp_path):
    assert isinstance(open_storage("", tmp_path / "r", S3Config()), LocalStorage)


# --- signed URLs -------------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"


def parse_signed(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return parts.path.removeprefix("/files/"), query["expires"][0], query["signature"][0]


def test_signed_url_has_the_agreed_shape():
    url = sign_url("https://api.example.com/", "outputs/j.mp4", SECRET, 1_700_000_000)
    prefix = "https://api.example.com/files/outputs/j.mp4?expires=1700000000&signature="
    assert url.startswith(prefix)
    expected = hmac.new(SECRET, b"outputs/j.mp4:1700000000", hashlib.sha256).hexdigest()
    assert url.endswith("signature=" + expected)


def test_signed_url_verifies_until_it_expires():
    key, expires, signature = parse_signed(sign_url("http://h", "outputs/j.mp4", SECRET, 2000))
    assert verify_signature(key, expires, signature, SECRET, now=1999.5)
    assert verify_signature(key, int(expires), signature, SECRET, now=2000)
    assert not verify_signature(key, expires, signature, SECRET, now=2000.1)


@pytest.mark.parametrize("tamper", ["key", "expires", "signature", "secret"])
def test_tampered_signed_urls_are_refused(tamper):
    key, expires, signature = parse_signed(sign_url("http://h", "outputs/j.mp4", SECRET, 2000))
    secret = SECRET
    if tamper == "key":
        key = "outputs/other.mp4"
    elif tamper == "expires":
        expires = "9999999999"
    elif tamper == "signature":
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    else:
        secret = b"another secret"
    assert not verify_signature(key, expires, signature, secret, now=1000)


@pytest.mark.parametrize("expires", ["", "abc", None, "1e9"])
def test_malformed_expiry_is_refused(expires):
    assert not verify_signature("k", expires, "00", SECRET, now=0)

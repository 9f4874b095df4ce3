"""The test-media lookup (tests/media.py): its order, its one skip message, and that the
catalogue's checksums are those of the media the tests really use."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests import media


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setattr(media, "SHARED_MEDIA", tmp_path / "no-shared")
    monkeypatch.setattr(media, "DOWNLOADED_MEDIA", tmp_path / "no-download")
    monkeypatch.delenv(media.MEDIA_ENV, raising=False)
    return tmp_path


def test_the_setting_comes_first(nowhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = nowhere / "mine"
    chosen.mkdir()
    (chosen / "talk_a.mp4").write_bytes(b"x")
    (nowhere / "no-shared").mkdir()
    monkeypatch.setenv(media.MEDIA_ENV, str(chosen))
    assert media.find_media_dir() == chosen
    assert media.media_file("talk_a.mp4") == chosen / "talk_a.mp4"


def test_shared_folder_then_downloaded_folder(nowhere: Path) -> None:
    (nowhere / "no-download").mkdir()
    assert media.find_media_dir() == nowhere / "no-download"
    (nowhere / "no-shared").mkdir()
    assert media.find_media_dir() == nowhere / "no-shared"


def test_no_media_skips_with_one_message(nowhere: Path) -> None:
    with pytest.raises(pytest.skip.Exception, match="test media not found") as skipped:
        media.media_file("talk_a.mp4")
    assert "LIPSYNCD_TEST_MEDIA" in str(skipped.value) and "make testdata" in str(skipped.value)


def test_catalogue_checksums_match_the_media_in_use() -> None:
    folder = media.media_dir()
    present = {p.name for p in folder.iterdir() if p.name in media.CATALOGUE}
    assert present, f"no catalogued file in {folder}"
    for name in sorted(present):
        assert media.sha256_of(folder / name) == media.CATALOGUE[name].sha256, name
    assert all(s.url.startswith("https://raw.githubusercontent.com/") for s in media.CATALOGUE.values() if s.url)


def test_download_refuses_wrong_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served.wav"
    served.write_bytes(b"not the real file")
    monkeypatch.setattr(media, "CATALOGUE", {
        "speech.wav": media.MediaSource(served.as_uri(), "0" * 64),
        "good.wav": media.MediaSource(served.as_uri(), media.sha256_of(served)),
    })
    missing = media.download(tmp_path / "out")
    assert missing == ["speech.wav"]
    assert not (tmp_path / "out" / "speech.wav").exists()
    assert (tmp_path / "out" / "good.wav").read_bytes() == b"not the real file"

"""Where the tests find real media, and how outsiders get it.

Lookup order (the first folder that exists wins):
1. `LIPSYNCD_TEST_MEDIA` (an explicit folder),
2. `../shared/media` beside the repository (the development machines' shared folder),
3. `.testdata/media` inside the repository (where `make testdata` downloads to by default).

Tests ask for a file with `media_file(name)` (or the folder with `media_dir()`); where no
media is found they are skipped with `MISSING_MEDIA`, never failed by a missing file.

`python -m tests.media download [FOLDER]` (what `make testdata` runs) fetches every file of
`CATALOGUE` from its public source at a pinned commit and checks its SHA-256; a file whose
bytes differ is refused and removed."""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MEDIA_ENV = "LIPSYNCD_TEST_MEDIA"
SHARED_MEDIA = ROOT.parent / "shared" / "media"
DOWNLOADED_MEDIA = ROOT / ".testdata" / "media"
MISSING_MEDIA = (
    f"test media not found: set {MEDIA_ENV}, or provide ../shared/media, or run `make testdata`"
)


@dataclass(frozen=True)
class MediaSource:
    url: str       # raw file at a pinned commit ("" for files made from others)
    sha256: str
    made_from: str = ""


_RETALKING = "https://raw.githubusercontent.com/OpenTalker/video-retalking"
_SADTALKER = "https://raw.githubusercontent.com/OpenTalker/SadTalker"
_MUSETALK = "https://raw.githubusercontent.com/TMElyralab/MuseTalk"
_RT_COMMIT = "6f584bd6e761fc20331c886b6afc8180fd9ee547"
_RT_FACE2_COMMIT = "c20de926e2f1954150840128eead9542263369d3"
_ST_COMMIT = "a2f4d654992ed54c0fe92fbcbc235377736fcf7a"

CATALOGUE: dict[str, MediaSource] = {
    "talk_a.mp4": MediaSource(
        f"{_RETALKING}/{_RT_COMMIT}/examples/face/1.mp4",
        "60fb69b90af2edbcec762530bfab8be5be2753bca9f3f897005772b544313f94"),
    "talk_b.mp4": MediaSource(
        f"{_RETALKING}/{_RT_FACE2_COMMIT}/examples/face/2.mp4",
        "f7d30499bc380f4d18c18b1837fc1f6eb280fa21d79a9f7c6dd66db94296c43c"),
    "speech_en_3.wav": MediaSource(
        f"{_RETALKING}/{_RT_COMMIT}/examples/audio/1.wav",
        "9b0ecd6da27bb3106cc069a797c5c56fb82d488b5547f7b65676c5d513862d98"),
    "speech_en_1.wav": MediaSource(
        f"{_SADTALKER}/{_ST_COMMIT}/examples/driven_audio/RD_Radio31_000.wav",
        "f2c9ccb3fd22f5bea782a2cd8ac6b60c4e8eb68b18a2eeeaa843b2bfb3c3dfbd"),
    "speech_en_2.wav": MediaSource(
        f"{_SADTALKER}/{_ST_COMMIT}/examples/driven_audio/RD_Radio34_002.wav",
        "57a0bfd5715cfde2a8e2effe3c776dbcb8e3a22aa872b5b682f00dc38780a631"),
    "speech_zh_1.wav": MediaSource(
        f"{_SADTALKER}/a59d22dcc8dbd20cd66da22e4c56041c7e2d5e6b/examples/driven_audio/chinese_news.wav",
        "7b0f4d313a1ca671bc4831d60bcf0c12225efbffe6c0e93e54fbfe9bcd4021cb"),
    "portrait_photo_a.png": MediaSource(
        f"{_SADTALKER}/52c561414921e9edc4206c6c792670e213a98ee6/examples/source_image/people_0.png",
        "db113b8d5254f77e64194a842ed25ab568834e5c983b57ed8b84e47ddbd13f07"),
    "portrait_photo_b.png": MediaSource(
        f"{_SADTALKER}/d3f6455c5776492921c41c4b0cc400532eb948ac/examples/source_image/happy.png",
        "b5e7438dcf598f103ad9c6e5ad3a920ffda53450002c4d5b59f16001945a7f00"),
    "portrait_anime.png": MediaSource(
        f"{_SADTALKER}/479a5adcc1c59761df74f918bb02b0c12c14afaf/examples/source_image/full3.png",
        "028571164e675a345a4c1281c6ab04a60475dc78d7de6d090494e25d2ac96bc4"),
    "portrait_art.png": MediaSource(
        f"{_SADTALKER}/{_ST_COMMIT}/examples/source_image/art_0.png",
        "9da3488bd82c124fab8d4825d2de59ff47e7242a2f13b4f06b3407b223bd9b59"),
    "portrait_painting.png": MediaSource(
        f"{_MUSETALK}/d861498ae36d4d09c34643e1b368c47b9ef14c12/assets/demo/monalisa/monalisa.png",
        "02a8f029bd73e52f4bb855006f426175f0017fda3878496202ad87e8aa9985f7"),
    # Composed on the development machines from the two photo portraits; no public source.
    "duo_photo.png": MediaSource(
        "", "8f77ca918e331c6307f9043b7c58ce530738fd01bd3f6ef625749db23a99c2a3",
        made_from="portrait_photo_a.png + portrait_photo_b.png"),
}


def candidate_dirs() -> list[Path]:
    configured = os.environ.get(MEDIA_ENV, "").strip()
    dirs = [Path(configured).expanduser()] if configured else []
    return [*dirs, SHARED_MEDIA, DOWNLOADED_MEDIA]


def find_media_dir() -> Path | None:
    """The first folder of the lookup order that exists, or None."""
    return next((d for d in candidate_dirs() if d.is_dir()), None)


# The folder the media servers serve (absent folders serve 404s; tests needing files skip).
MEDIA_DIR: Path = find_media_dir() or candidate_dirs()[0]


def media_dir() -> Path:
    """The media folder; skips the calling test when there is none."""
    found = find_media_dir()
    if found is None:
        pytest.skip(MISSING_MEDIA)
    return found


def media_file(name: str) -> Path:
    """One media file by name; skips the calling test when it cannot be found."""
    path = media_dir() / name
    if not path.is_file():
        pytest.skip(f"{MISSING_MEDIA} ({name} is not in {path.parent})")
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(folder: Path, timeout_s: float = 60.0) -> list[str]:
    """Fetch every catalogued file not already present with the right checksum; returns
    the names that could not be had (no public source, unreachable, or wrong bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    for name, source in sorted(CATALOGUE.items()):
        target = folder / name
        if target.is_file() and sha256_of(target) == source.sha256:
            continue
        if not source.url:
            print(f"{name}: no public source ({source.made_from}); copy it in by hand", file=sys.stderr)
            missing.append(name)
            continue
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source.url, timeout=timeout_s) as answer:  # noqa: S310 (https, pinned)
                for block in iter(lambda: answer.read(1 << 20), b""):
                    out.write(block)
            got = sha256_of(tmp)
            if got != source.sha256:
                print(f"{name}: checksum {got} != {source.sha256}; refused", file=sys.stderr)
                missing.append(name)
                continue
            tmp.replace(target)
            print(f"{name}: ok")
        except OSError as exc:
            print(f"{name}: could not download {source.url}: {exc}", file=sys.stderr)
            missing.append(name)
        finally:
            tmp.unlink(missing_ok=True)
    return missing


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "download":
        print("usage: python -m tests.media download [FOLDER]", file=sys.stderr)
        return 2
    folder = Path(argv[1]) if len(argv) > 1 else Path(os.environ.get(MEDIA_ENV) or DOWNLOADED_MEDIA)
    missing = download(folder)
    print(f"media in {folder}: {len(CATALOGUE) - len(missing)} of {len(CATALOGUE)} files")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

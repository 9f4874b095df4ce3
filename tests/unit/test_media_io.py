"""PyAV decoding and encoding round trips on real media, and crop/blend geometry."""
from __future__ import annotations

import asyncio
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from postprocess.blend import paste_crop
from postprocess.encode import AUDIO_RATE_HZ, Mp4Writer, i420_planes
from preprocess.align import extract_crop, face_crop_box
from preprocess.audio import RawTrack, decode_audio, normalise_loudness, write_track
from preprocess.decode import FrameStore, iter_video_frames, load_image, output_size
from preprocess.errors import MediaError
from tests.media import media_file


@pytest.mark.parametrize(("w", "h", "short", "expected"), [(700, 700, 480, (480, 480)),
                                                           (1000, 480, 720, (1500, 720)),
                                                           (300, 447, 480, (480, 716))])
def test_output_size_keeps_aspect_with_even_sides(w: int, h: int, short: int, expected: tuple[int, int]) -> None:
    assert output_size(w, h, short) == expected


def test_audio_is_decoded_to_mono_at_the_asked_rate() -> None:
    samples = decode_audio(media_file("speech_en_3.wav"), 16_000, 600)
    assert samples.ndim == 1 and abs(samples.size / 16_000 - 5.0) < 0.05


def test_audio_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(MediaError) as error:
        decode_audio(media_file("speech_en_1.wav"), 16_000, 3.0)
    assert error.value.code == "audio_too_long"


def test_streamed_track_equals_the_decoded_audio_scaled_and_clipped(tmp_path: Path) -> None:
    path = media_file("speech_en_3.wav")
    decoded = decode_audio(path, AUDIO_RATE_HZ, 600)
    count = write_track(path, tmp_path / "track.f32", AUDIO_RATE_HZ, 600, gain=4.0)
    track = RawTrack(tmp_path / "track.f32")
    assert count == track.size == decoded.size
    # Read the way the MP4 writer reads it: in order, in AAC-frame slices across blocks.
    samples = np.concatenate([track[i:i + 1024] for i in range(0, track.size, 1024)])
    np.testing.assert_array_equal(samples, np.clip(decoded * np.float32(4.0), -1.0, 1.0))


def test_a_fitted_track_is_padded_with_silence_or_cut(tmp_path: Path) -> None:
    np.arange(1, 101, dtype=np.float32).tofile(tmp_path / "track.f32")
    longer = RawTrack(tmp_path / "track.f32").fit(150)
    assert longer[90:150].tolist() == list(range(91, 101)) + [0.0] * 50
    shorter = RawTrack(tmp_path / "track.f32", scale=0.5).fit(60)
    assert shorter.size == 60 and shorter[58:100].tolist() == [29.5, 30.0]


def test_streamed_track_refuses_audio_over_the_limit(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as error:
        write_track(media_file("speech_en_1.wav"), tmp_path / "track.f32", AUDIO_RATE_HZ, 3.0)
    assert error.value.code == "audio_too_long"


def test_loudness_normalisation_keeps_silence_silent() -> None:
    assert not normalise_loudness(np.zeros(16_000, np.float32)).any()


def test_video_frames_come_at_the_asked_rate_and_size() -> None:
    frames = list(iter_video_frames(media_file("talk_b.mp4"), 12.5, (480, 480)))
    assert abs(len(frames) - 5.0 * 12.5) <= 2
    assert frames[0].shape == (480, 480, 3)


def _bt601_rgb(planes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The textbook BT.601 limited-range conversion of 4:2:0 planes [height * 3 / 2, width]
    (chroma repeated to full size), in float: the reference the decoder is held to."""
    p = planes.astype(np.float64)
    y = p[:height]
    u = p[height:height + height // 4].reshape(height // 2, width // 2).repeat(2, 0).repeat(2, 1)
    v = p[height + height // 4:].reshape(height // 2, width // 2).repeat(2, 0).repeat(2, 1)
    luma = 1.164383 * (y - 16)
    rgb = np.dstack([luma + 1.596027 * (v - 128),
                     luma - 0.391762 * (u - 128) - 0.812968 * (v - 128),
                     luma + 2.017232 * (u - 128)])
    return np.clip(rgb, 0, 255)


@pytest.mark.parametrize("size", [(700, 700), (480, 480), (720, 720), (1000, 1000), (200, 200)])
def test_video_frames_are_scaled_like_a_lanczos_reference_of_the_frame(size: tuple[int, int]) -> None:
    """Each scale (none, up, down) gives the frame a Lanczos resize of its exact BT.601
    colours gives, to within a level, with its sharpness."""
    first = next(iter_video_frames(media_file("talk_a.mp4"), 22.13, size))
    with av.open(str(media_file("talk_a.mp4"))) as container:
        planes = next(container.decode(video=0)).to_ndarray()
    native = np.round(_bt601_rgb(planes, 700, 700)).astype(np.uint8)
    reference = np.asarray(Image.fromarray(native).resize(size, Image.Resampling.LANCZOS), np.float32)
    assert first.shape == (size[1], size[0], 3)
    # libswscale's own RGB output is about a level dark (1.5 against this reference).
    assert np.abs(first.astype(np.float32) - reference).mean() < 0.6
    assert abs(float((first.astype(np.float32) - reference).mean())) < 0.2

    def sharpness(rgb: np.ndarray) -> float:
        grey = rgb.astype(np.float32).mean(2)
        return float(np.var(grey[1:-1, 1:-1] * 4 - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]))

    assert 0.8 < sharpness(first) / sharpness(reference) < 1.3


def test_a_decoded_frame_written_again_keeps_its_pixels() -> None:
    """Decoding at the video's own size and encoding with the MP4 writer's conversion are
    inverses: a pixel a dub leaves untouched goes out as it came in (no level lost per pass)."""
    with av.open(str(media_file("talk_a.mp4"))) as container:
        planes = next(container.decode(video=0)).to_ndarray()
    first = next(iter_video_frames(media_file("talk_a.mp4"), 22.13, (700, 700)))
    again = i420_planes(first)
    assert np.abs(again.astype(np.int16) - planes.astype(np.int16)).max() <= 1
    assert np.abs(again.astype(np.float32) - planes).mean() < 0.05


@pytest.mark.parametrize(("pix_fmt", "colorspace", "color_range"), [
    ("yuv420p", "ITU709", "MPEG"),     # HD video: the BT.709 matrix
    ("yuv420p", "ITU601", "JPEG"),     # full range, tagged
    ("yuvj420p", "ITU601", "JPEG"),    # full range by its format (JPEG-style YUV)
    ("yuv444p", "ITU601", "MPEG"),
    ("yuv420p10le", "ITU601", "MPEG"),
])
def test_video_frames_keep_their_colours_whatever_the_matrix_range_or_format(
        tmp_path: Path, pix_fmt: str, colorspace: str, color_range: str) -> None:
    from av.video.reformatter import ColorRange, Colorspace

    space, full = Colorspace[colorspace], ColorRange[color_range]
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, :160], rgb[:, 160:] = (200, 40, 30), (20, 180, 90)
    path = tmp_path / "tagged.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, pix_fmt
        stream.codec_context.colorspace, stream.codec_context.color_range = space, full
        stream.options = {"qp": "0"} if pix_fmt != "yuv420p10le" else {}
        for _ in range(3):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=space, dst_color_range=full)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    first = next(iter_video_frames(path, 10, (480, 360)))
    for x, colour in ((100, (200, 40, 30)), (380, (20, 180, 90))):
        assert np.abs(first[180, x].astype(int) - colour).max() <= 3, (x, first[180, x])


def test_frame_store_gives_back_each_frame_by_index(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (7, 6, 10, 3), dtype=np.uint8)
    store = FrameStore(tmp_path / "frames.rgb", (10, 6))
    store.extend(frames[:4])
    store.extend(frames[4:])
    assert store.shape == (7, 6, 10, 3) and len(store) == 7
    for index in (6, 0, 3, 3):
        np.testing.assert_array_equal(store[index], frames[index])
    store[2][:] = 0  # a new array each time: the store is not changed through it
    np.testing.assert_array_equal(store[2], frames[2])
    with pytest.raises(IndexError):
        store[7]
    with pytest.raises(ValueError):
        store.extend(frames[:, :3])


def test_rgba_image_is_flattened_to_rgb() -> None:
    image = load_image(media_file("duo_photo.png"), 40_000_000)
    assert image.shape == (480, 1000, 3) and image.dtype == np.uint8


@pytest.mark.parametrize("streamed", [False, True])
def test_writer_makes_h264_aac_with_matching_durations(tmp_path: Path, streamed: bool) -> None:
    audio: np.ndarray | RawTrack = np.zeros(int(2.0 * AUDIO_RATE_HZ), np.float32)
    if streamed:  # a track file half as long, padded with silence to the video
        np.zeros(AUDIO_RATE_HZ, np.float32).tofile(tmp_path / "track.f32")
        audio = RawTrack(tmp_path / "track.f32").fit(int(2.0 * AUDIO_RATE_HZ))
    with Mp4Writer(tmp_path / "out.mp4", (320, 240), 25.0, audio) as writer:
        for i in range(50):
            writer.write(np.full((240, 320, 3), i * 4, np.uint8))
    with av.open(str(tmp_path / "out.mp4")) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and sound.codec_context.name == "aac"
        assert sum(1 for _ in container.decode(video=0)) == 50
        assert abs(float(sound.duration * sound.time_base) - 2.0) < 0.05


def test_writer_closed_in_a_thread_finishes_the_file_once(tmp_path: Path) -> None:
    """The pipeline closes the writer in a worker thread (the flush and the faststart rewrite
    stay off the event loop) inside its `with`: leaving the block then changes nothing."""
    async def write() -> None:
        with Mp4Writer(tmp_path / "out.mp4", (160, 120), 25.0, np.zeros(AUDIO_RATE_HZ, np.float32)) as writer:
            for i in range(25):
                writer.write(np.full((120, 160, 3), i * 8, np.uint8))
            await asyncio.to_thread(writer.close)
            size = (tmp_path / "out.mp4").stat().st_size
        assert (tmp_path / "out.mp4").stat().st_size == size > 0

    asyncio.run(write())
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 25


def test_pasting_an_untouched_crop_changes_only_the_masked_region() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    landmarks = np.zeros((468, 3), np.float32)
    landmarks[:, 0] = rng.uniform(150, 250, 468)
    landmarks[:, 1] = rng.uniform(100, 220, 468)
    box = face_crop_box(landmarks)
    crop = extract_crop(image, box)
    mask = np.zeros((box.size, box.size), np.float32)
    mask[box.size // 2 - 10 : box.size // 2 + 10, box.size // 2 - 10 : box.size // 2 + 10] = 1.0
    frame = image.copy()
    paste_crop(frame, np.zeros_like(crop), mask, box)
    changed = np.argwhere((frame != image).any(axis=2))
    center = np.array([box.y0 + box.side / 2, box.x0 + box.side / 2])
    assert changed.size > 0
    assert np.abs(changed - center).max() < box.side / 2 * 0.2

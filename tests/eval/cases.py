"""The evaluation matrix: calibration rows on the real talking videos (own speech, another
clip's speech, a still portrait) and the mesh cases for the three endpoints."""
from __future__ import annotations

from dataclasses import dataclass, field

STILL_FPS = 25.0


@dataclass(frozen=True)
class Voice:
    audio: str  # media file name (a video's own track is read from the video)
    offset_s: float = 0.0  # where this voice starts on the output timeline
    after_previous: bool = False  # starts when the previous voice ends (adds to offset_s)
    face: int = 0  # which face speaks it: tracks are ordered left to right


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # calibration | image | video | multi
    voices: tuple[Voice, ...]
    endpoint: str | None = None  # None: measured without the mesh
    form: dict[str, object] = field(default_factory=dict)  # values naming media files become URLs
    video: str | None = None  # calibration video, or the video being dubbed
    image: str | None = None  # portrait (identity reference, or the still baseline)
    expect_sync: bool = True  # calibration rows that must score out of sync say False
    faces: int = 1
    real_mouth: str | None = None  # a real video whose own speech drives the case: its mouth is the reference

    @property
    def needs_mesh(self) -> bool:
        return self.endpoint is not None


def _calibration() -> list[Case]:
    own = [Case(f"cal_{v}_own_speech", "calibration", (Voice(f"{v}.mp4"),), video=f"{v}.mp4")
           for v in ("talk_a", "talk_b")]
    swapped = [Case(f"cal_{v}_with_{a.split('.')[0]}", "calibration", (Voice(a),), video=f"{v}.mp4", expect_sync=False)
               for v, a in (("talk_a", "talk_b.mp4"), ("talk_b", "talk_a.mp4"),
                            ("talk_a", "speech_en_3.wav"), ("talk_b", "speech_en_1.wav"))]
    still = [Case("cal_still_photo_a_en_3", "calibration", (Voice("speech_en_3.wav"),),
                  image="portrait_photo_a.png", expect_sync=False)]
    return own + swapped + still


def _image_cases() -> list[Case]:
    matrix = (("portrait_photo_a", "speech_en_1"), ("portrait_photo_b", "speech_en_2"),
              ("portrait_painting", "speech_en_3"), ("portrait_art", "speech_en_1"),
              ("portrait_anime", "speech_en_2"), ("portrait_photo_a", "speech_zh_1"))
    cases = [Case(f"img_{p.removeprefix('portrait_')}_{s.removeprefix('speech_')}", "image", (Voice(f"{s}.wav"),),
                  endpoint="lipsync-image", form={"image": f"{p}.png", "audio": f"{s}.wav", "seed": 1},
                  image=f"{p}.png")
             for p, s in matrix]
    # Driven by a real video's own speech: the output's mouth is compared with that speaker's real mouth.
    return cases + [Case(f"img_{p.removeprefix('portrait_')}_{v}_speech", "image", (Voice(f"{v}.mp4"),),
                         endpoint="lipsync-image", form={"image": f"{p}.png", "audio": f"{v}.mp4", "seed": 1},
                         image=f"{p}.png", real_mouth=f"{v}.mp4")
                    for p, v in (("portrait_photo_a", "talk_a"), ("portrait_photo_b", "talk_b"))]


def _video_cases() -> list[Case]:
    # cut_off keeps output frame i = source frame i, so the source can be compared frame by frame.
    return [Case(f"dub_{v}_{s.removeprefix('speech_')}", "video", (Voice(f"{s}.wav"),), endpoint="lipsync-video",
                 form={"video": f"{v}.mp4", "audio": f"{s}.wav", "seed": 1, "sync_mode": "cut_off"},
                 video=f"{v}.mp4")
            for v, s in (("talk_a", "speech_en_3"), ("talk_b", "speech_en_1"))] + [
        # Each video dubbed with its own speech: the output's mouth against the video's real mouth.
        Case(f"dub_{v}_own_speech", "video", (Voice(f"{v}.mp4"),), endpoint="lipsync-video",
             form={"video": f"{v}.mp4", "audio": f"{v}.mp4", "seed": 1, "sync_mode": "cut_off"},
             video=f"{v}.mp4", real_mouth=f"{v}.mp4")
        for v in ("talk_a", "talk_b")]


def _multi_cases() -> list[Case]:
    # order left_right: the right voice starts when the left one ends.
    voices = (Voice("speech_en_3.wav", face=0), Voice("speech_en_2.wav", face=1, after_previous=True))
    return [Case("multi_duo_en_3_en_2", "multi", voices,
                 endpoint="lipsync-image-multi",
                 form={"image": "duo_photo.png", "left_audio": "speech_en_3.wav", "right_audio": "speech_en_2.wav",
                       "order": "left_right", "seed": 1},
                 image="duo_photo.png", faces=2)]


def all_cases() -> list[Case]:
    return _calibration() + _image_cases() + _video_cases() + _multi_cases()


def select(cases: list[Case], patterns: list[str], skip_mesh: bool) -> list[Case]:
    """Cases whose name contains any pattern (all when none), without mesh cases if asked."""
    picked = [c for c in cases if not patterns or any(p in c.name for p in patterns)]
    return [c for c in picked if not (skip_mesh and c.needs_mesh)]

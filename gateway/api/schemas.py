"""Request and response shapes of the public API (SPEC section 3): the three submission
bodies with their formState fields and aliases, and the job object."""
from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator

MAX_URL_LENGTH = 4096
MAX_PROMPT_LENGTH = 2000
MAX_MULTI_AUDIOS = 8
SEED_MAX = 2**63 - 1


def check_http_url(value: str) -> str:
    value = value.strip()
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"URL is longer than {MAX_URL_LENGTH} characters")
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return value


HttpUrl = Annotated[str, AfterValidator(check_http_url)]

Resolution = Literal["480p", "720p"]  # proto.vocabulary.Resolution; checked by a unit test
SyncMode = Literal["bounce", "loop", "cut_off", "silence"]
Order = Literal["left_right", "right_left", "meanwhile", "sequence"]


class FormStateBase(BaseModel):
    # Clients of the hosted APIs send extra UI fields; they are ignored, not rejected.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    resolution: Resolution = "480p"
    mask_image: HttpUrl | None = Field(
        default=None, validation_alias=AliasChoices("mask_image", "mask_image_url")
    )
    prompt: str = Field(default="", max_length=MAX_PROMPT_LENGTH)
    seed: int | None = Field(default=None, ge=-1, le=SEED_MAX)

    def input_urls(self) -> dict[str, str]:
        """role -> URL, as carried by the JobRequest."""
        roles = ("video", "audio", "image", "left_audio", "right_audio", "mask_image")
        return {role: url for role in roles if (url := getattr(self, role, None))}


class VideoFormState(FormStateBase):
    video: HttpUrl = Field(validation_alias=AliasChoices("video", "video_url"))
    audio: HttpUrl = Field(validation_alias=AliasChoices("audio", "audio_url"))
    sync_mode: SyncMode = "bounce"


class ImageFormState(FormStateBase):
    image: HttpUrl = Field(validation_alias=AliasChoices("image", "image_url"))
    audio: HttpUrl = Field(validation_alias=AliasChoices("audio", "audio_url"))


class MultiFormState(FormStateBase):
    image: HttpUrl = Field(validation_alias=AliasChoices("image", "image_url"))
    left_audio: HttpUrl | None = Field(
        default=None, validation_alias=AliasChoices("left_audio", "left_audio_url")
    )
    right_audio: HttpUrl | None = Field(
        default=None, validation_alias=AliasChoices("right_audio", "right_audio_url")
    )
    audios: list[HttpUrl] | None = Field(default=None, min_length=2, max_length=MAX_MULTI_AUDIOS)
    order: Order | None = None

    @model_validator(mode="after")
    def _check_voices(self) -> MultiFormState:
        if self.audios is not None:
            if self.left_audio or self.right_audio:
                raise _field_error("audios", "give either audios or left_audio/right_audio")
            self.order = self.order or "sequence"
            return self
        for role in ("left_audio", "right_audio"):
            if not getattr(self, role):
                raise _field_error(role, "Field required")
        if self.order == "sequence":
            raise _field_error("order", "order 'sequence' needs the audios list")
        self.order = self.order or "left_right"
        return self


class FieldError(ValueError):
    """A model-level check that names the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _field_error(field: str, message: str) -> FieldError:
    return FieldError(field, message)


class VideoJobCreate(BaseModel):
    webhook: HttpUrl | None = None
    formState: VideoFormState


class ImageJobCreate(BaseModel):
    webhook: HttpUrl | None = None
    formState: ImageFormState


class MultiJobCreate(BaseModel):
    webhook: HttpUrl | None = None
    formState: MultiFormState


JobCreate = VideoJobCreate | ImageJobCreate | MultiJobCreate


class JobAccepted(BaseModel):
    id: str
    status: str


class JobPublic(BaseModel):
    """The job object shared by GET /api/v1/jobs/{id} and the webhook body."""

    id: str
    model: str
    status: str
    output: str | None = None
    error: str = ""
    executionTime: int | None = None
    timings: dict[str, int] | None = None
    error_code: str | None = None
    progress: float = 0.0
    stage: str = ""
    outputs: list[str] | None = None
    created_at: str
    completed_at: str | None = None
    expires_at: str | None = None
    seed: int
    formState: dict[str, Any]
    quality: dict[str, Any] | None = None  # measured on the output: sync offset/confidence, faces found


class JobList(BaseModel):
    data: list[JobPublic]
    next_cursor: str | None = None

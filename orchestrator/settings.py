"""Orchestrator configuration: with postprocess/settings.py (the part shared with the
gateway), the only place in orchestrator/, preprocess/ and postprocess/ that reads the
environment (LIPSYNCD_* variables and an optional .env file)."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from postprocess.settings import StorageSettings
from postprocess.webhooks import DEFAULT_DELAYS_S
from proto.secretkey import load_secret_key, scale_out_reasons

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class OrchestratorSettings(StorageSettings):
    """The orchestrator's settings; storage, link signing and scale-out: StorageSettings."""

    model_config = SettingsConfigDict(env_prefix="LIPSYNCD_", env_file=".env", extra="ignore")

    home: Path = Path(".lipsyncd")
    nats_url: str = "nats://127.0.0.1:4222"
    # The orchestrator's NATS user (empty: no authentication), see proto/topology.py.
    nats_user: str = ""
    nats_password: str = ""
    triton_url: str = "127.0.0.1:8011"
    # Several Triton servers, comma-separated gRPC host:port; stage calls are spread over
    # them (round robin, a dead one skipped). Empty: triton_url alone.
    triton_urls: str = ""
    # Large tensors to and from Triton through POSIX shared memory instead of inside gRPC
    # messages: true, false, or auto: on when every Triton URL is on this host (127.0.0.1 /
    # localhost / ::1); a server that cannot map a region turns it off for itself.
    triton_shared_memory: Literal["auto", "true", "false"] = "auto"
    public_url: str = ""
    port: int = Field(default=8000, validation_alias="PORT")
    allow_private_urls: bool = False
    # JetStream servers each stream and bucket is kept on (1 single node, 3 on a cluster).
    stream_replicas: int = Field(default=1, ge=1, le=5)

    # Limits on what a job may ask of the machine.
    max_audio_s: float = 600.0
    max_video_s: float = 600.0
    max_download_mb: int = 500
    max_image_pixels: int = 40_000_000
    max_fps: float = 30.0
    # Source video frames are decoded whole: limits on their size and rate (video_too_large).
    max_video_pixels: int = 4096 * 2160
    max_video_fps: float = 60.0
    # Address space of the child process that decodes a source video (RLIMIT_AS); past it the
    # job fails with video_too_large. About 0.3 GiB at 480p and 0.5 GiB at 4K measured. 0: none.
    decoder_max_memory_bytes: int = Field(default=2 * 1024**3, ge=0)
    # For tests of the final-state race only: the "encode" stage waits this long before the
    # output is stored, so a cancel can be sent while the job is at that stage. Keep 0.
    hold_encode_s: float = Field(default=0.0, ge=0, le=60)
    # A job that has not finished after base + per_output_s x its output length (seconds)
    # fails with deadline_exceeded and is refunded, instead of heart-beating forever.
    job_deadline_base_s: float = 300.0
    job_deadline_per_output_s: float = 10.0
    image_fps: float = 25.0

    # Disk: no job is taken while the scratch disk has less free space than this; uploads
    # and outputs are deleted this long after they were written (swept every interval).
    min_free_disk_bytes: int = 1024**3
    disk_wait_s: float = 10.0
    file_retention_s: float = 7 * 24 * 3600
    file_sweep_interval_s: float = 3600.0

    # JetStream delivery: a job not acked within ack_wait_s is redelivered, so a running
    # job sends a heartbeat every heartbeat_s; after max_deliver attempts it is failed.
    ack_wait_s: float = 30.0
    heartbeat_s: float = 5.0
    max_deliver: int = 3
    concurrency: int = 1
    # On SIGTERM the orchestrator stops pulling and lets its running job finish for this
    # long; past it the job is handed back (not counted as a failed attempt) and exits.
    drain_grace_s: float = Field(default=25.0, ge=0)
    # How often a Triton server marked down is probed, and how long a stage call waits for
    # one to come back when every server is down.
    triton_probe_interval_s: float = 1.0
    triton_all_down_wait_s: float = 30.0
    # Frames per generator request. A portrait's frames are cheap: 25 a request carry less
    # overhead (a 10 s 480p portrait: 2.48 s against 2.61 with 8). A dub's are transplants at
    # the source's own resolution: 8 a request keep composing and encoding in step with both
    # generator instances, so little is left to compose after the last render (6 s dubs,
    # alternating meshes: 480p 2.61-2.63 s against 2.67-2.70 with 25, 720p 3.34 against 3.71).
    render_batch: int = Field(default=25, ge=1)
    dub_render_batch: int = Field(default=8, ge=1)
    # Parts a speech of 4-34 s is split into for the audio_features stage, decoded side by
    # side by its instances (model_repository/audio_features/config.pbtxt); speech of 34-120 s
    # always goes in two parts, cut where the stage cuts its decode pieces anyway. Off (1) by
    # default: two parts cut the analysis wait by a third but may cost some lip-sync accuracy,
    # because the recogniser hears less of the words around the cut. Parts are cut only in
    # pauses of 0.15 s or more (`mouthcues.pipeline.split_points`): of `make eval`'s portraits
    # two are cut (real-mouth correlation 0.53 -> 0.50 for talk_a's speech, Mandarin AUC
    # 0.82 -> 0.78), the English AUCs unchanged.
    speech_parts: int = 1
    # A dub learns how this speaker's mouth follows speech from the source video's own
    # soundtrack (a second audio_features pass, beside tracking): orchestrator/dubbing/articulation.py.
    dub_speaker_fit: bool = True
    # At most this much of the source's soundtrack (from its start) is analysed for that map: a
    # ridge over a dozen inputs is settled well within 30 s, and each second more costs the
    # stage's full analysis (0.13-0.2 core-s a second of speech on the 2-core machines here) on long dubs.
    dub_speaker_fit_max_s: float = Field(default=30.0, ge=2.0)
    # That analysis is kept for the same account's next dub of the same video (another
    # language, another script): at most this many videos (a 30 s soundtrack's tracks are
    # ~30 KB; 0 keeps none), each for at most this long (orchestrator/dubbing/speech_cache.py).
    dub_speech_cache_entries: int = Field(default=256, ge=0)
    dub_speech_cache_ttl_s: float = Field(default=3600.0, gt=0.0)

    # Webhook retry schedule in seconds (Standard Webhooks' guidance spans more than a day).
    webhook_schedule_s: str = ",".join(f"{s:g}" for s in DEFAULT_DELAYS_S)
    webhook_timeout_s: float = 10.0

    @property
    def triton_url_list(self) -> list[str]:
        urls = [url.strip() for url in self.triton_urls.split(",") if url.strip()]
        return urls or [self.triton_url]

    @property
    def triton_shared_memory_on(self) -> bool:
        if self.triton_shared_memory != "auto":
            return self.triton_shared_memory == "true"
        return all(url.rsplit(":", 1)[0].strip("[]") in LOOPBACK_HOSTS for url in self.triton_url_list)

    @property
    def home_dir(self) -> Path:
        return self.home.resolve()

    @property
    def storage_root(self) -> Path:
        return (self.storage_dir or self.home_dir / "storage").resolve()

    @property
    def scratch_root(self) -> Path:
        return self.home_dir / "scratch"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://127.0.0.1:{self.port}").rstrip("/")

    @cached_property
    def secret_key_bytes(self) -> bytes:
        """Shared with the gateway (signed output URLs); created on first start if unset,
        except in a scale-out deployment, which must give it (proto/secretkey.py)."""
        reasons = scale_out_reasons(explicit=self.scale_out, storage_url=self.storage_url)
        return load_secret_key(self.secret_key, self.home_dir, scale_out=bool(reasons),
                               why=", ".join(reasons))

    @property
    def webhook_delays_s(self) -> list[float]:
        return [float(part) for part in self.webhook_schedule_s.split(",") if part.strip()]


def load_settings() -> OrchestratorSettings:
    return OrchestratorSettings()

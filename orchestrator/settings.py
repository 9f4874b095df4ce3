"""Orchestrator configuration: the only place in orchestrator/, preprocess/ and postprocess/
that reads the environment (LIPSYNCD_* variables and an optional .env file)."""
from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestratorSettings(BaseSettings):
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
    public_url: str = ""
    port: int = Field(default=8000, validation_alias="PORT")
    storage_dir: Path | None = None
    secret_key: str = ""
    allow_private_urls: bool = False

    # Limits on what a job may ask of the machine.
    max_audio_s: float = 600.0
    max_video_s: float = 600.0
    max_download_mb: int = 500
    max_image_pixels: int = 40_000_000
    max_fps: float = 30.0
    image_fps: float = 25.0

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
    render_batch: int = 25
    # Parts a speech of 4-34 s is split into for the audio_features stage, decoded side by
    # side by its instances (model_repository/audio_features/config.pbtxt); speech of 34-120 s
    # always goes in two parts, cut where the stage cuts its decode pieces anyway. Off (1) by
    # default: two parts cut the analysis wait by a third but cost some lip-sync accuracy,
    # because the recogniser hears less of the words around the cut (measured in `make eval`:
    # bilabial AUC 0.01-0.04 lower on 8 s clips, unchanged on a 5 s one).
    speech_parts: int = 1

    # Webhook retry schedule in seconds (Standard Webhooks' guidance spans more than a day).
    webhook_schedule_s: str = "5,300,1800,7200,18000,36000,36000"
    webhook_timeout_s: float = 10.0

    @property
    def triton_url_list(self) -> list[str]:
        urls = [url.strip() for url in self.triton_urls.split(",") if url.strip()]
        return urls or [self.triton_url]

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
        """Shared with the gateway (signed output URLs); created on first start if unset."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.home_dir / "secret_key"
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: the gateway may be creating the same file at the same moment
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    @property
    def webhook_delays_s(self) -> list[float]:
        return [float(part) for part in self.webhook_schedule_s.split(",") if part.strip()]


def load_settings() -> OrchestratorSettings:
    return OrchestratorSettings()

"""Gateway configuration: every `LIPSYNCD_*` variable (and `PORT`) the gateway reads, with
derived defaults under `LIPSYNCD_HOME`. This is the only module that reads the environment."""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gateway.billing.plans import DEFAULT_PLANS, Plan

SECRET_KEY_FILE = "secret_key"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="LIPSYNCD_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Path(".lipsyncd")
    port: int = Field(default=8000, validation_alias=AliasChoices("PORT", "port"))
    database_url: str = ""
    nats_url: str = "nats://127.0.0.1:4222"
    triton_url: str = "127.0.0.1:8011"  # gRPC host:port (used by the orchestrator)
    triton_http_url: str = "http://127.0.0.1:8010"  # HTTP, for readiness checks
    public_url: str = ""
    allow_private_urls: bool = False
    secret_key: str = ""
    storage_dir: Path | None = None
    plans: dict[str, Plan] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    default_plan: str = "free"
    price_per_second: dict[str, int] = Field(default_factory=lambda: {"480p": 1, "720p": 2})
    min_billed_duration_s: int = 5
    max_upload_bytes: int = 200 * 1024 * 1024
    output_url_ttl_s: int = 7 * 24 * 3600
    session_ttl_s: int = 30 * 24 * 3600
    signup_enabled: bool = True  # the dashboard's /signup; off: accounts only from the admin CLI
    nats_timeout_s: float = 5.0
    triton_ready_timeout_s: float = 2.0
    # Verified API keys are remembered this long per process; a key revoked through another
    # replica keeps working there for at most this long. 0 turns the cache off.
    api_key_cache_ttl_s: float = Field(default=5.0, ge=0)
    access_log: bool = False  # one log line per request costs CPU under load
    admin_email: str = "admin@localhost"
    admin_api_credits: int = 1000
    admin_app_credits: int = 1000

    @field_validator("plans", mode="before")
    @classmethod
    def _parse_plans(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)
        return value

    @model_validator(mode="after")
    def _derive_defaults(self) -> "Settings":
        self.home = self.home.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'lipsyncd.db'}"
        if not self.public_url:
            self.public_url = f"http://127.0.0.1:{self.port}"
        self.public_url = self.public_url.rstrip("/")
        self.storage_dir = (self.storage_dir or self.home / "storage").expanduser().resolve()
        if self.default_plan not in self.plans:
            raise ValueError(f"default_plan {self.default_plan!r} is not in plans")
        return self

    @property
    def storage_path(self) -> Path:
        assert self.storage_dir is not None  # set by _derive_defaults
        return self.storage_dir

    def secret_key_bytes(self) -> bytes:
        """The key that signs file URLs: LIPSYNCD_SECRET_KEY, else $HOME/secret_key (created once)."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.home / SECRET_KEY_FILE
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            # O_EXCL: two processes starting together must not write two different keys.
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as handle:
                    handle.write(secrets.token_hex(32))
        return path.read_text().strip().encode()

    def plan(self, name: str) -> Plan:
        return self.plans.get(name) or self.plans[self.default_plan]

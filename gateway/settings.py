"""Gateway configuration: every `LIPSYNCD_*` variable (and `PORT`) the gateway reads, with
derived defaults under `LIPSYNCD_HOME`. This is the only module of gateway/ that reads the
environment (the storage and signing part it shares with the orchestrator: postprocess/settings.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from gateway.billing.plans import DEFAULT_PLANS, Plan
from postprocess.settings import StorageSettings
from proto.secretkey import load_secret_key, scale_out_reasons


class Settings(StorageSettings):
    """The gateway's settings; storage, link signing and scale-out: StorageSettings."""

    model_config = SettingsConfigDict(
        env_prefix="LIPSYNCD_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Path(".lipsyncd")
    port: int = Field(default=8000, validation_alias=AliasChoices("PORT", "port"))
    # The address the API listens on; 127.0.0.1 behind `make serve`'s round robin.
    host: str = "0.0.0.0"  # noqa: S104 - the public port
    database_url: str = ""
    nats_url: str = "nats://127.0.0.1:4222"
    # The gateway's NATS user (empty: no authentication), see proto/topology.py.
    nats_user: str = ""
    nats_password: str = ""
    triton_url: str = "127.0.0.1:8011"  # gRPC host:port (used by the orchestrator)
    triton_http_url: str = "http://127.0.0.1:8010"  # HTTP, for readiness checks
    public_url: str = ""
    allow_private_urls: bool = False
    plans: dict[str, Plan] = Field(default_factory=lambda: dict(DEFAULT_PLANS))
    default_plan: str = "free"
    price_per_second: dict[str, int] = Field(default_factory=lambda: {"480p": 1, "720p": 2})
    min_billed_duration_s: int = 5
    max_upload_bytes: int = 200 * 1024 * 1024
    # Every other request body (JSON, login forms): refused with 413 as it streams past this.
    max_json_bytes: int = Field(default=64 * 1024, ge=1024)
    session_ttl_s: int = 30 * 24 * 3600
    signup_enabled: bool = True  # the dashboard's /signup; off: accounts only from the admin CLI
    nats_timeout_s: float = 5.0
    # JetStream servers each stream and bucket is kept on (1 single node, 3 on a cluster).
    stream_replicas: int = Field(default=1, ge=1, le=5)
    triton_ready_timeout_s: float = 2.0
    # Verified API keys are remembered this long per process; a key revoked through another
    # replica keeps working there for at most this long. 0 turns the cache off.
    api_key_cache_ttl_s: float = Field(default=5.0, ge=0)
    # Where requests per minute are counted: "database" (shared by all replicas), "memory"
    # (this process only), or "auto": the database when it is PostgreSQL or scale_out is set.
    rate_limit_store: Literal["auto", "memory", "database"] = "auto"
    # Password logins (argon2id costs 64 MiB and a CPU core for ~0.1 s per check): at most
    # this many checks at once per gateway, at most this many more waiting (then 429).
    max_concurrent_password_checks: int = Field(default=2, ge=1)
    max_waiting_password_checks: int = Field(default=64, ge=0)
    # Failed logins are counted in the database (so across replicas) per account and per
    # client IP over a fixed window; past the limit the login answers 429 + Retry-After.
    login_window_s: int = Field(default=900, ge=1)
    login_max_failures_per_account: int = Field(default=10, ge=1)
    login_max_failures_per_ip: int = Field(default=100, ge=1)
    login_throttle_max_rows: int = Field(default=100_000, ge=100)
    # Sign-ups per client IP over a window, counted in the same table; then 429.
    signup_window_s: int = Field(default=3600, ge=1)
    signup_max_per_ip: int = Field(default=10, ge=1)
    # Addresses or CIDRs of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are
    # believed (comma-separated). Empty: none, the peer address is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    access_log: bool = False  # one log line per request costs CPU under load
    # The reaper (every reaper_interval_s) fails and refunds a processing job whose
    # heartbeat stopped reaper_stale_s ago, or that never started within reaper_queued_s.
    reaper_interval_s: float = 60.0
    reaper_stale_s: float = 600.0
    reaper_queued_s: float = 6 * 3600.0
    # Uploads and job submissions answer 503 while the storage disk has less free space.
    min_free_disk_bytes: int = 1024**3
    # The orchestrator deletes outputs this long after they were written (LIPSYNCD_FILE_RETENTION_S,
    # read by both): past it a job shows `output: null` instead of a link to a deleted file.
    file_retention_s: float = Field(default=7 * 24 * 3600, gt=0)
    admin_email: str = "admin@localhost"
    admin_api_credits: int = 1000
    admin_app_credits: int = 1000

    @field_validator("plans", mode="before")
    @classmethod
    def _parse_plans(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value)
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_trusted_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else value.split(",")
        return [item.strip() for item in value if item.strip()]

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
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

    @property
    def scale_out_reasons(self) -> list[str]:
        return scale_out_reasons(explicit=self.scale_out, database_url=self.database_url,
                                 storage_url=self.storage_url)

    @property
    def shared_rate_limits(self) -> bool:
        if self.rate_limit_store == "auto":
            return self.database_url.startswith("postgresql") or self.scale_out
        return self.rate_limit_store == "database"

    def secret_key_bytes(self) -> bytes:
        """The key that signs file URLs: LIPSYNCD_SECRET_KEY, else $HOME/secret_key (created
        once, and only when this is not a scale-out deployment: proto/secretkey.py)."""
        reasons = self.scale_out_reasons
        return load_secret_key(self.secret_key, self.home, scale_out=bool(reasons), why=", ".join(reasons))

    def plan(self, name: str) -> Plan:
        return self.plans.get(name) or self.plans[self.default_plan]

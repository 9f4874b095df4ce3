"""Settings the gateway and the orchestrator share, read through each one's own settings
class (gateway/settings.py, orchestrator/settings.py; same LIPSYNCD_* and AWS_* variables):
where files are stored, the key that signs their links, and how long a link lives."""
from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings

from postprocess.storage import S3Config


class StorageSettings(BaseSettings):
    secret_key: str = ""
    storage_dir: Path | None = None
    # Empty: files under storage_dir. s3://bucket/prefix: an S3-compatible object store,
    # reached with the standard AWS_* variables below; the bucket must exist beforehand.
    storage_url: str = ""
    aws_endpoint_url: str = Field(default="", validation_alias="AWS_ENDPOINT_URL")
    aws_default_region: str = Field(default="", validation_alias="AWS_DEFAULT_REGION")
    aws_access_key_id: str = Field(default="", validation_alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: str = Field(default="", validation_alias="AWS_SECRET_ACCESS_KEY")
    # Signed file links (outputs in GET answers and webhook bodies, uploads) are valid this long.
    output_url_ttl_s: int = 7 * 24 * 3600
    # Several gateways/orchestrators share this deployment (also implied by PostgreSQL or
    # S3): the signing key must then be given, never generated per process.
    scale_out: bool = False

    def s3_config(self) -> S3Config:
        return S3Config(
            endpoint_url=self.aws_endpoint_url or None,
            region=self.aws_default_region or None,
            access_key_id=self.aws_access_key_id or None,
            secret_access_key=self.aws_secret_access_key or None,
        )

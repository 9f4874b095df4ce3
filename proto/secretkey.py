"""The one key that signs file URLs, shared by every gateway and orchestrator: given as
LIPSYNCD_SECRET_KEY, or kept in `$LIPSYNCD_HOME/secret_key`. A lone local mesh creates that
file once (O_EXCL, so two processes starting together agree on one key). A scale-out
deployment never creates it: processes on other machines would each make their own key and
refuse each other's URLs, so such a process refuses to start instead."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_KEY_FILE = "secret_key"


class SecretKeyMissing(RuntimeError):
    """Scale-out configured, but no shared signing key was given."""


def load_secret_key(configured: str, home: Path, *, scale_out: bool, why: str = "") -> bytes:
    """`configured` if set, else the key file under `home`; the file is created only when
    not `scale_out` (`why` names what made this process scale-out, for the message)."""
    if configured:
        return configured.encode()
    path = home / SECRET_KEY_FILE
    if not path.exists():
        if scale_out:
            raise SecretKeyMissing(
                f"LIPSYNCD_SECRET_KEY is not set and {path} does not exist, but this process is "
                f"configured for several processes ({why}): each would sign URLs with a key of "
                "its own. Set LIPSYNCD_SECRET_KEY to the same random value (e.g. "
                "`python -c 'import secrets; print(secrets.token_hex(32))'`) for every gateway "
                "and orchestrator, or put it in that file."
            )
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:  # two processes starting together must not write two different keys
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    key = path.read_text().strip()
    if not key:
        raise SecretKeyMissing(f"{path} is empty; put the shared signing key in it")
    return key.encode()


def scale_out_reasons(*, explicit: bool, database_url: str = "", storage_url: str = "") -> list[str]:
    """What makes a configuration one of several processes that must share state:
    LIPSYNCD_SCALE_OUT=1, a database other than SQLite, or S3 storage."""
    reasons = []
    if explicit:
        reasons.append("LIPSYNCD_SCALE_OUT=1")
    if database_url and not database_url.startswith("sqlite"):
        reasons.append("LIPSYNCD_DATABASE_URL is not SQLite")
    if storage_url.startswith("s3://"):
        reasons.append("LIPSYNCD_STORAGE_URL is S3")
    return reasons

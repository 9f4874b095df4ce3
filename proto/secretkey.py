"""The service's secret key (signs file URLs), shared by the gateway and the orchestrator:
the configured value if set, else a random key created once in `<home>/secret_key` (mode
0600; O_EXCL so that two processes starting together keep one key)."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_KEY_FILE = "secret_key"


def load_secret_key(configured: str, home: Path) -> bytes:
    if configured:
        return configured.encode()
    path = home / SECRET_KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()

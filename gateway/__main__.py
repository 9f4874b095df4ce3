"""`python -m gateway`: serve the API with uvicorn on PORT."""
from __future__ import annotations

import logging
import os

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from postprocess.storage import StorageUnavailable
from proto.secretkey import SecretKeyMissing


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # readiness probes, one line each
    settings = Settings()
    # State under LIPSYNCD_HOME (database, secret key, uploads, outputs) is the owner's only.
    os.umask(0o077)
    settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    settings.home.chmod(0o700)
    # X-Forwarded-* are believed only from the configured proxies (none by default).
    try:
        app = create_app(settings)
        app.state.gateway.storage.check()  # the lifespan checks again; here it exits cleanly
    except (SecretKeyMissing, StorageUnavailable) as exc:
        raise SystemExit(f"lipsyncd gateway: {exc}") from None
    uvicorn.run(app, host=settings.host, port=settings.port,
                proxy_headers=bool(settings.trusted_proxies),
                forwarded_allow_ips=",".join(settings.trusted_proxies) or "",
                access_log=settings.access_log, log_level="info" if settings.access_log else "warning")


if __name__ == "__main__":
    main()

"""`python -m gateway`: serve the API with uvicorn on PORT."""
from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # readiness probes, one line each
    settings = Settings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, proxy_headers=True,
                access_log=settings.access_log, log_level="info" if settings.access_log else "warning")


if __name__ == "__main__":
    main()

"""notiflow's command line and process management. Importing it points Prefect at notiflow's server.

These defaults must be in the environment before Prefect is imported: Prefect reads its settings
once, and the processes notiflow starts (server, served flow runs) inherit them.
"""
from __future__ import annotations

import os
from pathlib import Path


def _prefect_defaults() -> None:
    home = Path(os.environ.get("NOTIFLOW_HOME", ".notiflow")).resolve()
    os.environ["NOTIFLOW_HOME"] = str(home)
    (home / "prefect").mkdir(parents=True, exist_ok=True)
    port = os.environ.get("NOTIFLOW_PREFECT_PORT", "4200")
    os.environ.setdefault("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Served deployments notice a new run within this many seconds (Prefect's default is 10).
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")


_prefect_defaults()

"""Run the sandbox carrier: `python -m providers.sandbox [--host 127.0.0.1] [--port 8765] [--config FILE.json]`.

Without --config the settings come from NOTIFLOW_SANDBOX_CONFIG (a JSON object), else the defaults.
"""
from __future__ import annotations

import argparse
import logging

import uvicorn

from providers.sandbox.carrier import create_app
from providers.sandbox.config import CONFIG_ENV_VAR, CarrierConfig

logger = logging.getLogger("notiflow.sandbox")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m providers.sandbox", description="notiflow's sandbox carrier (every channel)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--config", metavar="FILE.json", help=f"carrier settings (default: ${CONFIG_ENV_VAR}, else built-in)"
    )
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs each request's full URL, and a webhook URL carries its receiver's secret.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = CarrierConfig.from_file(args.config) if args.config else CarrierConfig.from_env()
    logger.info("sandbox carrier on http://%s:%d with %s", args.host, args.port, config.model_dump_json())
    # A request hanging in an injected timeout would otherwise hold Ctrl-C for timeout_seconds.
    uvicorn.run(create_app(config), host=args.host, port=args.port, timeout_graceful_shutdown=1)


if __name__ == "__main__":
    main()

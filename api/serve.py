"""`notiflow api`: the API under uvicorn, with an access log that never shows a secret.

Secrets can reach a request line: a provider's webhook secret and an artifact link's signature are
query parameters. The access log shows those values as `***`; the Authorization header is never logged.
"""
from __future__ import annotations

import logging
import re
from copy import deepcopy
from typing import Any

# Query parameters whose values are credentials.
SECRET_PARAMETERS = ("secret", "signature", "token", "password", "api_key", "apikey", "key")
_SECRET_VALUE = re.compile(r"(?i)([?&](?:%s)=)[^&\s\"]*" % "|".join(SECRET_PARAMETERS))


def redact(text: str) -> str:
    """`text` with every secret query parameter's value replaced by ***."""
    return _SECRET_VALUE.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Rewrites a log record's message and arguments with their secret query values hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging, with RedactSecrets on every handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_secrets": {"()": "api.serve.RedactSecrets"}}
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_secrets"]
    return config


def serve_api(host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    # Imported first: Prefect sets up its logging on import, which would drop uvicorn's handlers set up before.
    from api.app import app
    from models.db import get_engine

    get_engine()  # migrate before the first request
    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config(), server_header=False)

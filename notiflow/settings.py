"""The CLI's settings: the same NOTIFLOW_* settings every layer reads."""
from models.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]

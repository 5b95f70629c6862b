"""The HTTP API: FastAPI routes over the library, bearer tokens, problem+json errors."""

from .app import create_app
from .settings import Settings

__all__ = ["Settings", "create_app"]

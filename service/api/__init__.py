"""The FastAPI application of the report service (`create_app`)."""

from service.api.app import create_app

__all__ = ["create_app"]

"""An in-memory MongoDB wire-protocol stand-in for tests (no MongoDB is installable here)."""

from tests.mongo_standin.server import MongoStandin

__all__ = ["MongoStandin"]

"""An in-memory HTTP stand-in for the InfluxDB 2 API (tests only; see server.py)."""

from tests.influx_standin.server import InfluxStandIn

__all__ = ["InfluxStandIn"]

"""Run the InfluxDB 2 API stand-in by hand: `uv run python -m tests.influx_standin [--port 8086]`.

Its one all-access token is $VIBEOPS_INFLUX_TOKEN (the embedded InfluxConnection reads the
same variable); org `vibeops`. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

from tests.influx_standin import InfluxStandIn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8086)
    args = parser.parse_args()
    token = os.environ.get("VIBEOPS_INFLUX_TOKEN", "")
    if not token:
        sys.exit("set VIBEOPS_INFLUX_TOKEN to the token the stand-in should accept")
    server = InfluxStandIn(port=args.port, token=token).start()
    print(f"InfluxDB 2 API stand-in (in memory) on http://127.0.0.1:{args.port}; Ctrl-C stops it")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

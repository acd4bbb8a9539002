"""Run the MongoDB stand-in by hand: `uv run python -m tests.mongo_standin [--port 27017]`.

No users: authentication is off, as on a fresh mongod. Stop it with Ctrl-C.
"""

from __future__ import annotations

import argparse
import threading

from tests.mongo_standin import MongoStandin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=27017)
    args = parser.parse_args()
    server = MongoStandin(args.port).start()
    print(f"MongoDB stand-in (in memory) on 127.0.0.1:{args.port}; Ctrl-C stops it", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()

"""A MongoDB wire-protocol server for tests, backed by mongoeco.

Runs under a Python >= 3.13 interpreter that has ``mongoeco`` installed (the
Makefile's ``.venv-mongo``, made by ``scripts/install-servers.sh``). The test
fixtures in ``tests/servers.py`` start it as a child process and talk to it with
pymongo, exactly as they would with a real ``mongod``.

    python scripts/mongo_wire_server.py --port 27999 [--engine sqlite --path DB]

Prints one line ``mongo-wire-server ready mongodb://HOST:PORT/`` on stdout once
it accepts connections, then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


def _parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--engine",
        choices=("memory", "sqlite"),
        default="memory",
        help="memory: data lives until the process stops; sqlite: persisted in --path",
    )
    parser.add_argument("--path", help="SQLite database file (with --engine sqlite)")
    args = parser.parse_args(argv)
    if args.engine == "sqlite" and not args.path:
        parser.error("--engine sqlite needs --path")
    return args


async def _serve(args: argparse.Namespace) -> None:
    from mongoeco.engines import MemoryEngine, SQLiteEngine
    from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

    engine = MemoryEngine() if args.engine == "memory" else SQLiteEngine(args.path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with AsyncMongoEcoProxyServer(engine=engine, host=args.host, port=args.port) as server:
        address = server.address
        print(
            f"mongo-wire-server ready mongodb://{address.host}:{address.port}/ "
            f"engine={args.engine}",
            flush=True,
        )
        await stop.wait()
        print("mongo-wire-server stopping", flush=True)
    print("mongo-wire-server stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    if sys.version_info < (3, 13):
        print("mongo_wire_server.py needs Python >= 3.13 (mongoeco)", file=sys.stderr)
        return 2
    args = _parse_args(argv)
    try:
        import bson  # noqa: F401  (mongoeco's wire codec needs it: mongoeco[wire])
        import mongoeco  # noqa: F401
    except ImportError as exc:
        print(f"mongo_wire_server.py: {exc}; pip install 'mongoeco[wire]'", file=sys.stderr)
        return 2
    asyncio.run(_serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

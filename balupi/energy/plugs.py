"""Talking to Tapo plugs through python-kasa: connect, poll, switch, read history, add, discover.

Every coroutine here runs on the energy event loop (balupi.energy.loop); callers put each poll
under an overall deadline (`asyncio.wait_for`), because a plug that stops answering makes
python-kasa retry for over a minute. After any failure the connection is dropped and the next
poll reconnects from the stored config (`device.config` with the credentials *hash*, never the
password), so a cancelled or half-finished exchange never poisons the next one.

Polls ask the plug directly for `get_device_info`, `get_energy_usage` and `get_emeter_data` in
one request instead of calling `Device.update()`: `update()` turns a failing module query into a
module error, backs the module off and after ten failures disables it for good, which hides
exactly the failures a monitor has to report (and a plug unplugged for a day would never come back).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any, Awaitable, Callable, TypeVar
from zoneinfo import ZoneInfo

from kasa import (
    AuthenticationError,
    Credentials,
    Device,
    DeviceConfig,
    DeviceConnectionParameters,
    DeviceEncryptionType,
    DeviceError,
    DeviceFamily,
    Discover,
    UnsupportedDeviceError,
)
from kasa.exceptions import SmartErrorCode, _ConnectionError

from balupi.energy.ledger import plug_midnight
from balupi.energy.model import PlugUnavailable, PollErrorKind, Reading

log = logging.getLogger("balupi.energy")
T = TypeVar("T")

CLOSE_TIMEOUT_S = 2.0
HISTORY_INTERVAL_HOURLY = 60  # get_energy_data: minutes per value
MAX_HISTORY_DAYS = 31  # a gap longer than this is filled from counters only, beyond that left open
POLL_QUERY = {"get_device_info": None, "get_energy_usage": None, "get_emeter_data": None}

# Connection parameters tried, in order, when a plug is added by address without discovery.
DIRECT_CONNECTIONS = (
    DeviceConnectionParameters(DeviceFamily.SmartTapoPlug, DeviceEncryptionType.Klap, login_version=2),
    DeviceConnectionParameters(DeviceFamily.SmartTapoPlug, DeviceEncryptionType.Aes, login_version=2),
    DeviceConnectionParameters(DeviceFamily.SmartTapoPlug, DeviceEncryptionType.Aes),
)


def classify(exc: BaseException) -> PollErrorKind:
    """The error kind a poll's exception stands for."""
    if isinstance(exc, PlugUnavailable):
        return exc.kind
    if isinstance(exc, AuthenticationError):
        return PollErrorKind.AUTHENTICATION
    if isinstance(exc, UnsupportedDeviceError):
        return PollErrorKind.UNSUPPORTED
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError, asyncio.CancelledError)):
        return PollErrorKind.TIMEOUT
    if isinstance(exc, (_ConnectionError, OSError)):
        return PollErrorKind.OFFLINE
    if isinstance(exc, DeviceError):
        return PollErrorKind.DEVICE_ERROR
    return PollErrorKind.PROTOCOL


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


@dataclass
class PlugFacts:
    """What a plug says about itself when it is added."""

    config: dict
    model: str
    mac: str
    hardware_id: str
    alias: str
    timezone: str
    host: str
    port: int | None


def _zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or ""


def _device_zone(device: Device, fallback: ZoneInfo) -> tzinfo:
    try:
        tz = device.timezone
    except Exception:  # no time module
        return fallback
    return tz if _zone_name(tz) or tz is not timezone.utc else fallback


def _stored_config(device: Device) -> dict:
    return device.config.to_dict_control_credentials(credentials_hash=device.credentials_hash or "")


def facts_of(device: Device, host: str, port: int | None, fallback_zone: ZoneInfo) -> PlugFacts:
    info = getattr(device, "_info", {}) or {}
    return PlugFacts(
        config=_stored_config(device),
        model=device.model,
        mac=device.mac,
        hardware_id=str(info.get("device_id") or device.device_id),
        alias=device.alias or "",
        timezone=_zone_name(_device_zone(device, fallback_zone)) or fallback_zone.key,
        host=host,
        port=port,
    )


def _result(resp: dict, method: str) -> dict | None:
    value = resp.get(method)
    if value is None or isinstance(value, SmartErrorCode):
        return None
    return value


def parse_reading(plug_id: int, resp: dict, at: float, zone: tzinfo) -> Reading:
    """A Reading from the answer to POLL_QUERY. Raises PlugUnavailable(PROTOCOL) when it cannot."""
    info = _result(resp, "get_device_info") or {}
    usage = _result(resp, "get_energy_usage")
    emeter = _result(resp, "get_emeter_data") or {}
    if usage is None or "today_energy" not in usage or "local_time" not in usage:
        raise PlugUnavailable(PollErrorKind.PROTOCOL, f"the plug's energy answer lacks its counters: {usage!r}")
    try:
        naive = datetime.strptime(usage["local_time"], "%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        raise PlugUnavailable(PollErrorKind.PROTOCOL, f"unreadable plug time {usage.get('local_time')!r}") from None
    if emeter.get("power_mw") is not None:
        power_w = emeter["power_mw"] / 1000
    elif usage.get("current_power") is not None:
        power_w = usage["current_power"] / 1000  # milliwatts in get_energy_usage
    else:
        power_w = 0.0
    return Reading(
        plug_id=plug_id,
        at=at,
        power_w=float(power_w),
        today_wh=int(usage["today_energy"]),
        month_wh=int(usage.get("month_energy") or 0),
        plug_time=naive.replace(tzinfo=zone),
        voltage_v=emeter["voltage_mv"] / 1000 if emeter.get("voltage_mv") is not None else None,
        current_a=emeter["current_ma"] / 1000 if emeter.get("current_ma") is not None else None,
        is_on=info.get("device_on"),
    )


def history_dates(prev: Reading | None, cur: Reading, gap: bool) -> list[date]:
    """The plug dates whose hourly history the ledger needs to account for `cur` after `prev`."""
    if prev is None:
        return []
    dates: list[date] = []
    if cur.plug_date != prev.plug_date:
        dates.append(prev.plug_date)
        if prev.clock_valid and cur.clock_valid and cur.plug_date > prev.plug_date:
            d = prev.plug_date + timedelta(days=1)
            while d < cur.plug_date and len(dates) < MAX_HISTORY_DAYS:
                dates.append(d)
                d += timedelta(days=1)
    if gap:
        dates.append(cur.plug_date)
    return dates


async def hard_deadline(coro: Awaitable[T], timeout_s: float, on_abandon: Callable[[asyncio.Task], None] | None = None) -> T:
    """Await coro for at most timeout_s, then raise TimeoutError, whatever coro does with its cancellation.

    `asyncio.wait_for` waits for the cancelled coroutine to finish, and python-kasa's retries can
    turn a cancellation that coincides with aiohttp's own timeout into one more attempt (seen: a
    1 s deadline took 7 s). Here the caller gets its answer at the deadline; the abandoned task is
    cancelled and left to end on its own (`on_abandon` gets it, to clean up after it).
    """
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task in done:
        return task.result()
    task.cancel()
    if on_abandon is not None:
        on_abandon(task)
    else:
        task.add_done_callback(_consume)
    raise TimeoutError(f"no answer within {timeout_s:g} s")


def _consume(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


async def _close(device: Device) -> None:
    try:
        await asyncio.wait_for(device.disconnect(), CLOSE_TIMEOUT_S)
    except BaseException as exc:  # closing is best effort, even when cancelled
        log.debug("closing a plug connection failed: %s", exc)


class PlugLink:
    """One plug's python-kasa connection. Its coroutines run on the energy loop only.

    Every call runs under a hard deadline. A call that misses it is abandoned: the connection it
    used is forgotten at once (the next call reconnects) and closed when the abandoned task ends;
    a connection an abandoned task opens late is closed, never adopted (the generation check).
    """

    def __init__(
        self,
        plug_id: int,
        config: dict,
        credentials: Credentials | None,
        timeout_s: float,
        zone: tzinfo,
    ):
        self.plug_id = plug_id
        self.config = config
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.zone = zone
        self._device: Device | None = None
        self._generation = 0

    def _device_config(self) -> DeviceConfig:
        config = DeviceConfig.from_dict(self.config)
        if self.credentials is not None:
            config.credentials = self.credentials  # wins over the stored hash (a changed password)
        config.timeout = max(1, int(self.timeout_s))
        return config

    async def _connected(self, generation: int) -> Device:
        if self._device is None:
            device = await Device.connect(config=self._device_config())
            if generation != self._generation:  # this call was abandoned meanwhile
                await _close(device)
                raise asyncio.CancelledError()
            self._device = device
            self.zone = _device_zone(device, self.zone if isinstance(self.zone, ZoneInfo) else ZoneInfo("UTC"))
            self.config = _stored_config(device)
        return self._device

    async def _call(self, op: Callable[[Device], Awaitable[T]]) -> T:
        generation = self._generation

        async def attempt() -> T:
            return await op(await self._connected(generation))

        try:
            return await hard_deadline(attempt(), self.timeout_s, self._abandon)
        except TimeoutError:
            raise
        except BaseException:
            await self.drop()
            raise

    def _abandon(self, task: asyncio.Task) -> None:
        self._generation += 1
        device, self._device = self._device, None

        def ended(t: asyncio.Task) -> None:
            _consume(t)
            if device is not None:
                asyncio.ensure_future(_close(device))

        task.add_done_callback(ended)

    async def poll(self, prev: Reading | None, gap: bool, clock: Callable[[], float]) -> Reading:
        """Read power and counters (and the hourly history the ledger will need). Raises on failure."""
        started = time.monotonic()

        async def op(device: Device) -> Reading:
            resp = await device.protocol.query(dict(POLL_QUERY))
            reading = parse_reading(self.plug_id, resp, clock(), self.zone)
            for d in history_dates(prev, reading, gap):
                buckets = await self._hourly(device, d, reading)
                if buckets is not None:
                    reading.history[d] = buckets
            return reading

        reading = await self._call(op)
        reading.latency_s = time.monotonic() - started
        return reading

    async def _hourly(self, device: Device, d: date, cur: Reading) -> list[int] | None:
        """The plug's Wh per hour of its local date d (up to now for today), or None if it will not say."""
        start = plug_midnight(d, cur.plug_time)
        end_s = plug_midnight(d + timedelta(days=1), cur.plug_time).timestamp()
        if d == cur.plug_date:
            end_s = cur.plug_time.timestamp() + 1
        params = {"start_timestamp": int(start.timestamp()), "end_timestamp": int(end_s), "interval": HISTORY_INTERVAL_HOURLY}
        try:
            resp = await device.protocol.query({"get_energy_data": params})
        except DeviceError as exc:
            log.debug("plug %s: no hourly history for %s: %s", self.plug_id, d, exc)
            return None
        data = _result(resp, "get_energy_data") or {}
        values = data.get("data")
        if not isinstance(values, list) or not all(isinstance(v, int) and v >= 0 for v in values):
            return None
        return values

    async def set_on(self, on: bool) -> None:
        async def op(device: Device) -> None:
            await device.protocol.query({"set_device_info": {"device_on": bool(on)}})

        await self._call(op)

    async def drop(self) -> None:
        """Forget the connection (closing it); the next call reconnects."""
        device, self._device = self._device, None
        if device is not None:
            await _close(device)


# -- adding and discovering ---------------------------------------------------------------------------


async def probe(host: str, port: int | None, credentials: Credentials | None, timeout_s: float, fallback_zone: ZoneInfo) -> PlugFacts:
    """Connect to a plug by address, finding its protocol. Raises PlugUnavailable with the reason."""
    errors: list[BaseException] = []
    if port is None:
        try:
            device = await Discover.discover_single(
                host, discovery_timeout=max(1, int(timeout_s / 3)), timeout=max(1, int(timeout_s)), credentials=credentials
            )
            if device is not None:
                try:
                    await device.update()
                    return facts_of(device, host, port, fallback_zone)
                finally:
                    await device.disconnect()
        except (AuthenticationError, UnsupportedDeviceError) as exc:
            raise PlugUnavailable(classify(exc), describe(exc)) from exc
        except Exception as exc:  # no discovery answer: try connecting directly
            errors.append(exc)
    for params in DIRECT_CONNECTIONS:
        config = DeviceConfig(host=host, port_override=port, timeout=max(1, int(timeout_s)),
                              credentials=credentials, connection_type=params)
        try:
            device = await Device.connect(config=config)
        except Exception as exc:
            kind = classify(exc)
            if kind in (PollErrorKind.AUTHENTICATION, PollErrorKind.OFFLINE):
                raise PlugUnavailable(kind, describe(exc)) from exc  # definite: no other protocol helps
            errors.append(exc)
            continue
        try:
            return facts_of(device, host, port, fallback_zone)
        finally:
            await device.disconnect()
    device = await Discover.try_connect_all(host, port=port, timeout=max(1, int(timeout_s)), credentials=credentials)
    if device is not None:
        try:
            return facts_of(device, host, port, fallback_zone)
        finally:
            await device.disconnect()
    last = errors[-1] if errors else None
    kind = classify(last) if last is not None else PollErrorKind.UNSUPPORTED
    if kind is PollErrorKind.PROTOCOL:
        kind = PollErrorKind.UNSUPPORTED
    raise PlugUnavailable(kind, f"no protocol python-kasa speaks reached {host}" + (f": {describe(last)}" if last else ""))


async def discover(target: str, credentials: Credentials | None, timeout_s: float) -> list[dict]:
    """Plugs answering a discovery probe to `target` (a broadcast address, or one host)."""
    found = await Discover.discover(
        target=target, discovery_timeout=max(1, int(timeout_s)), credentials=credentials,
        timeout=max(1, int(timeout_s)),
    )
    out = []
    for ip, device in found.items():
        entry: dict[str, Any] = {"host": ip, "port": device.config.connection_type.http_port or device.config.port_override}
        try:
            await asyncio.wait_for(device.update(), timeout_s)
            entry.update(model=device.model, mac=device.mac, name=device.alias, hardware_id=device.device_id, error_kind=None)
        except Exception as exc:
            entry.update(model=getattr(device, "model", None), error_kind=classify(exc).value, error=describe(exc))
        finally:
            try:
                await asyncio.wait_for(device.disconnect(), CLOSE_TIMEOUT_S)
            except BaseException:
                pass
        out.append(entry)
    return out


"""The simulated NAS (balupi.sim.nas): a real WsgiDAV/REST server on 127.0.0.1 with power states,
Wake-on-LAN, counters, fault switches and a control port. Small delays keep the file fast."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
import requests

from balupi.nas.wol import magic_packet, send_magic_packet
from balupi.sim.nas import PowerState, SimNas, SleepMode, seed_sample_tree
from balupi.sim.nas_cli import parse_user_spec
from balupi.sim.nas_seed import sample_files
from tests.helpers import subprocess_env

USERS = {"admin": ("adminpw", "admin"), "alice": ("alicepw", "user"), "bob": ("bobpw", "user")}
ADMIN = ("admin", "adminpw")
ALICE = ("alice", "alicepw")
BOOT_DELAY_S = 0.25


@pytest.fixture
def sim(tmp_path):
    with SimNas(tmp_path / "nas", users=USERS, boot_delay_s=BOOT_DELAY_S) as nas:
        yield nas


@pytest.fixture
def client():
    with requests.Session() as session:
        session.trust_env = False
        yield session


def get(url, **kwargs):
    """One request on a fresh connection (no keep-alive surprises across power states)."""
    with requests.Session() as session:
        session.trust_env = False
        return session.request(kwargs.pop("method", "GET"), url, timeout=kwargs.pop("timeout", 5),
                                **kwargs)


def port_refuses(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:  # the listener was closing under this very connect
            return False
        return False


def wait_until(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def propfind_names(client, url, auth) -> set[str]:
    response = client.request("PROPFIND", url, auth=auth, headers={"Depth": "1"})
    assert response.status_code == 207, response.text
    tree = ElementTree.fromstring(response.content)
    return {href.text for href in tree.iter("{DAV:}href")}


# --- WebDAV --------------------------------------------------------------------------------------


def test_webdav_put_get_propfind_lock(sim, client):
    url = sim.dav_url + "Documents/report.txt"
    assert client.request("MKCOL", sim.dav_url + "Documents/", auth=ADMIN).status_code == 201
    put = client.put(url, data=b"quarterly numbers", auth=ADMIN)
    assert put.status_code == 201
    response = client.get(url, auth=ADMIN)
    assert response.status_code == 200 and response.content == b"quarterly numbers"
    etag = response.headers["ETag"]
    assert etag.startswith('"') and etag.count("-") == 2  # "<inode>-<mtime s>-<size>"
    assert etag.strip('"').endswith("-17")
    assert (sim.root / "Documents" / "report.txt").read_bytes() == b"quarterly numbers"
    assert "/dav/Documents/report.txt" in propfind_names(client, sim.dav_url + "Documents/", ADMIN)
    # A compliant class-2 server: OPTIONS announces locking, LOCK/UNLOCK work.
    options = client.options(sim.dav_url, auth=ADMIN)
    assert "2" in [part.strip() for part in options.headers["DAV"].split(",")]
    lock_body = ('<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
                 '</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>')
    lock = client.request("LOCK", url, data=lock_body, auth=ADMIN, headers={"Timeout": "Second-60"})
    assert lock.status_code == 200
    token = lock.headers["Lock-Token"]
    assert client.put(url, data=b"x", auth=ADMIN).status_code == 423  # locked, no token
    unlock = client.request("UNLOCK", url, auth=ADMIN, headers={"Lock-Token": token})
    assert unlock.status_code == 204


def test_webdav_non_ascii_and_spaces(sim, client):
    url = sim.dav_url + quote("Grüße aus München.txt")
    assert client.put(url, data="Servus".encode(), auth=ADMIN).status_code == 201
    assert (sim.root / "Grüße aus München.txt").exists()
    assert client.get(url, auth=ADMIN).text == "Servus"
    assert sim.requests[-1].path == "/dav/Grüße aus München.txt"


@pytest.mark.parametrize("user, password", [ADMIN, ALICE])
def test_litmus_passes_for_admin_and_home_user(sim, user, password, tmp_path):
    litmus = shutil.which("litmus")
    assert litmus, "litmus is not installed (apt-get install litmus); .ci/run installs it"
    # litmus leaves debug.log and child.log where it runs: a scratch directory, not the checkout
    proc = subprocess.run([litmus, sim.dav_url, user, password], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL, cwd=tmp_path)
    summaries = re.findall(r"<- summary for `\w+': of (\d+) tests run: (\d+) passed, (\d+) failed",
                           proc.stdout)
    assert sum(int(ok) for _run, ok, _bad in summaries) == 104, proc.stdout
    assert sum(int(bad) for _run, _ok, bad in summaries) == 0, proc.stdout


def test_collection_without_slash_redirects_under_the_dav_prefix(sim, client):
    (sim.root / "Photos" / "2024").mkdir(parents=True)
    response = client.get(sim.dav_url + "Photos/2024", auth=ADMIN, allow_redirects=False)
    assert response.status_code == 301 and response.headers["Location"] == "/dav/Photos/2024/"
    assert client.get(sim.dav_url + "Photos/2024", auth=ADMIN).status_code == 200


def test_auth_refuses_bad_credentials(sim, client):
    (sim.root / "secret.txt").write_text("top secret")
    url = sim.dav_url + "secret.txt"
    for auth in (None, ("admin", "wrong"), ("mallory", "adminpw"), ("alice", "adminpw")):
        response = client.get(url, auth=auth)
        assert response.status_code == 401, auth
        assert response.headers["WWW-Authenticate"].startswith("Basic")
        assert b"top secret" not in response.content
    assert all(r.user is None for r in sim.requests)
    assert client.get(url, auth=ADMIN).status_code == 200
    assert sim.requests[-1].user == "admin"


def test_non_admin_user_sees_only_home(sim, client):
    (sim.root / "admin-only.txt").write_text("admin")
    assert client.put(sim.dav_url + "mine.txt", data=b"alice's", auth=ALICE).status_code == 201
    assert (sim.root / "home" / "alice" / "mine.txt").read_bytes() == b"alice's"
    names = propfind_names(client, sim.dav_url, ALICE)
    assert names == {"/dav/", "/dav/mine.txt"}
    assert client.get(sim.dav_url + "admin-only.txt", auth=ALICE).status_code == 404
    assert client.get(sim.dav_url + "../admin-only.txt", auth=ALICE).status_code in (403, 404)
    # bob does not see alice's file; the admin sees it under home/alice/
    assert client.get(sim.dav_url + "mine.txt", auth=("bob", "bobpw")).status_code == 404
    assert client.get(sim.dav_url + "home/alice/mine.txt", auth=ADMIN).content == b"alice's"


# --- REST ----------------------------------------------------------------------------------------


def test_rest_endpoints(sim, client):
    expected = {"status": "ok", "version": "sim-1", "api_version": "1"}
    assert client.get(sim.base_url + "/api/health").json() == expected
    assert client.get(sim.base_url + "/api/ping").json() == expected

    bad = client.post(sim.base_url + "/api/auth/login", json={"username": "admin", "password": "x"})
    assert bad.status_code == 401
    login = client.post(sim.base_url + "/api/auth/login",
                        json={"username": "alice", "password": "alicepw"})
    assert login.status_code == 200
    body = login.json()
    assert body["token_type"] == "bearer" and body["access_token"]
    assert body["user"] == {"id": 2, "username": "alice", "role": "user"}
    bearer = {"Authorization": f"Bearer {body['access_token']}"}

    status_url = sim.base_url + "/api/system/sleep/status"
    assert client.get(status_url).status_code == 401
    status = client.get(status_url, headers=bearer).json()
    assert status["current_state"] == "awake" and status["power_state"] == "awake"
    assert client.get(status_url, headers={"Authorization": "Bearer forged"}).status_code == 401
    # suspend and wake need the admin role
    assert client.post(sim.base_url + "/api/system/sleep/suspend", headers=bearer).status_code == 403
    assert client.post(sim.base_url + "/api/system/sleep/wake", auth=ADMIN).json()["state"] == "awake"
    assert client.get(sim.base_url + "/api/nope").status_code == 404
    assert client.delete(sim.base_url + "/api/health").status_code == 405
    assert sim.request_count(path="/api/system/sleep/status", user="alice") == 1


def test_rest_suspend_closes_the_port_after_answering(sim):
    token = get(sim.base_url + "/api/auth/login", method="POST",
                json={"username": "admin", "password": "adminpw"}).json()["access_token"]
    response = get(sim.base_url + "/api/system/sleep/suspend", method="POST",
                   headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.json()["state"] == "suspended"
    assert sim.state is PowerState.SUSPENDED
    assert wait_until(lambda: port_refuses(sim.port))


# --- power states --------------------------------------------------------------------------------


def test_suspend_refuses_and_only_the_right_magic_packet_boots_after_the_delay(sim):
    port = sim.port
    assert get(sim.base_url + "/api/ping").ok
    sim.suspend()
    assert sim.state is PowerState.SUSPENDED
    assert port_refuses(port)
    with pytest.raises(requests.ConnectionError):
        get(sim.base_url + "/api/ping", timeout=1)

    send_magic_packet("02:00:00:00:00:99", "127.0.0.1", sim.wol_port)  # someone else's MAC
    assert wait_until(lambda: len(sim.magic_packets) == 1)
    assert not sim.wait_for_state(PowerState.BOOTING, 0.1)
    assert sim.magic_packets[0].matched is False and sim.magic_packet_count == 0

    sent_at = time.monotonic()
    send_magic_packet(sim.mac, "127.0.0.1", sim.wol_port)
    assert sim.wait_for_state(PowerState.BOOTING, 1.0)
    assert port_refuses(port)  # still booting
    assert sim.wait_for_state(PowerState.AWAKE, 3.0)
    assert time.monotonic() - sent_at >= BOOT_DELAY_S * 0.9
    assert sim.port == port and get(sim.base_url + "/api/ping").ok
    assert sim.boot_count == 1 and sim.magic_packet_count == 1
    packet = sim.magic_packets[-1]
    assert packet.matched and packet.acted and packet.state is PowerState.SUSPENDED


def test_power_off_and_wake_now(sim):
    sim.power_off()
    assert sim.state is PowerState.OFF and port_refuses(sim.port)
    sim.wake_now()
    assert sim.state is PowerState.AWAKE and get(sim.base_url + "/api/ping").ok
    assert sim.boot_count == 1


def test_initially_suspended_sim_refuses_until_woken(tmp_path):
    with SimNas(tmp_path, initial_state=PowerState.SUSPENDED, boot_delay_s=0.05) as nas:
        assert nas.port and port_refuses(nas.port)
        send_magic_packet(nas.mac, "127.0.0.1", nas.wol_port)
        assert nas.wait_for_state(PowerState.AWAKE, 3.0)
        assert get(nas.base_url + "/api/health").ok


def test_counters_record_state_at_arrival_and_soft_sleep_wakes_on_request(tmp_path):
    with SimNas(tmp_path, sleep_mode=SleepMode.SOFT, spinup_delay_s=0.2) as nas:
        assert get(nas.base_url + "/api/ping").ok
        nas.suspend()
        assert nas.state is PowerState.SOFT_SLEEP
        assert not port_refuses(nas.port)  # soft sleep: the port accepts
        started = time.monotonic()
        assert get(nas.base_url + "/api/ping").ok
        assert time.monotonic() - started >= 0.18  # spin-up
        assert nas.state is PowerState.AWAKE and nas.wake_count == 1
        assert get(nas.dav_url, method="PROPFIND", auth=("admin", "admin"),
                   headers={"Depth": "0"}).status_code == 207
        states = [(r.method, r.path, r.state) for r in nas.requests]
        assert states == [("GET", "/api/ping", PowerState.AWAKE),
                          ("GET", "/api/ping", PowerState.SOFT_SLEEP),
                          ("PROPFIND", "/dav/", PowerState.AWAKE)]
        assert nas.request_count(state="soft_sleep") == 1
        assert nas.request_count(method="propfind", path_prefix="/dav") == 1
        assert nas.requests[-1].user == "admin" and nas.requests[-1].status == 207
        # "this operation caused zero NAS requests and no magic packet"
        nas.reset_counters()
        since = time.time()
        assert nas.request_count(since_s=since) == 0 and nas.magic_packet_count == 0
        assert nas.requests == [] and nas.boot_count == 0 and nas.wake_count == 0


def test_magic_packet_wakes_soft_sleep(tmp_path):
    with SimNas(tmp_path, sleep_mode="soft") as nas:
        nas.suspend()
        send_magic_packet(nas.mac, "127.0.0.1", nas.wol_port)
        assert nas.wait_for_state(PowerState.AWAKE, 2.0)
        assert nas.wake_count == 1 and nas.boot_count == 0 and nas.requests == []


def test_idle_suspend(tmp_path):
    with SimNas(tmp_path, idle_suspend_s=0.15) as nas:
        assert get(nas.base_url + "/api/ping").ok
        assert nas.state is PowerState.AWAKE
        assert nas.wait_for_state(PowerState.SUSPENDED, 2.0)
        assert port_refuses(nas.port)


# --- faults --------------------------------------------------------------------------------------


@pytest.fixture
def big_file(sim):
    content = bytes(range(256)) * 800  # 200 KiB
    (sim.root / "big.bin").write_bytes(content)
    return sim.dav_url + "big.bin", content


def test_fault_latency(sim):
    sim.faults.latency_s = 0.2
    started = time.monotonic()
    assert get(sim.base_url + "/api/ping").ok
    assert time.monotonic() - started >= 0.19
    sim.faults.clear()


def test_fault_bandwidth_cap(sim, big_file):
    url, content = big_file
    sim.faults.bandwidth_bytes_per_s = 1_000_000
    started = time.monotonic()
    response = get(url, auth=ADMIN)
    assert response.content == content
    assert time.monotonic() - started >= 0.18  # 204800 bytes at 1 MB/s
    assert sim.requests[-1].bytes_sent == len(content)


def test_fault_drop_get_after_n_bytes(sim, big_file):
    url, content = big_file
    sim.faults.drop_get(after_bytes=1000, count=1)
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(url, auth=ADMIN, stream=True, timeout=5)
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(content))
        received = bytearray()
        with pytest.raises(requests.exceptions.ChunkedEncodingError) as info:
            for chunk in response.iter_content(100):
                received += chunk
    assert bytes(received) == content[:1000]
    assert "1000 bytes read" in str(info.value)
    record = sim.requests[-1]
    assert record.fault == "drop_get" and record.bytes_sent == 1000
    assert get(url, auth=ADMIN).content == content  # count=1: the next one is fine


def test_fault_drop_get_matches_path_only(sim, big_file):
    url, content = big_file
    (sim.root / "other.bin").write_bytes(content)
    sim.faults.drop_get(after_bytes=10, count=None, path="/dav/big")
    assert get(sim.dav_url + "other.bin", auth=ADMIN).content == content
    for _ in range(2):
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            get(url, auth=ADMIN)


def test_fault_drop_put_upload(sim, client):
    sim.faults.drop_put(after_bytes=4096)
    with pytest.raises(requests.ConnectionError):
        get(sim.dav_url + "upload.bin", method="PUT", data=b"u" * 300_000, auth=ADMIN)
    assert not (sim.root / "upload.bin").exists()
    assert sim.requests[-1].fault == "drop_put" and sim.requests[-1].status is None
    assert client.put(sim.dav_url + "upload.bin", data=b"u" * 300_000, auth=ADMIN).status_code == 201


def test_fault_5xx_for_next_k_requests_of_a_method(sim, client):
    sim.faults.fail(status=503, count=2, method="GET")
    assert client.request("PROPFIND", sim.dav_url, auth=ADMIN, headers={"Depth": "0"}).ok
    assert client.get(sim.base_url + "/api/ping").status_code == 503
    assert client.get(sim.dav_url, auth=ADMIN).status_code == 503
    assert client.get(sim.base_url + "/api/ping").status_code == 200
    assert [r.fault for r in sim.requests] == [None, "fail", "fail", None]


def test_fault_never_wake(sim):
    sim.faults.never_wake = True
    sim.suspend()
    send_magic_packet(sim.mac, "127.0.0.1", sim.wol_port)
    assert wait_until(lambda: sim.magic_packet_count == 1)
    assert not sim.wait_for_state(PowerState.AWAKE, BOOT_DELAY_S + 0.2)
    assert sim.state is PowerState.SUSPENDED and sim.magic_packets[0].acted is False


def test_suspend_cuts_a_transfer_in_flight(sim, big_file):
    url, _content = big_file
    sim.faults.bandwidth_bytes_per_s = 200_000  # ~1 s for the file
    errors = []

    def download():
        try:
            get(url, auth=ADMIN)
        except requests.RequestException as exc:
            errors.append(exc)

    thread = threading.Thread(target=download)
    thread.start()
    assert wait_until(lambda: sim.requests and sim.requests[-1].bytes_sent == 0)
    time.sleep(0.2)
    sim.suspend()
    thread.join(5)
    assert errors and sim.requests[-1].fault == "halted"


# --- control port and process --------------------------------------------------------------------


def test_control_port(sim, client):
    control = sim.control_url
    state = client.get(control + "/state").json()
    assert state["state"] == "awake" and state["port"] == sim.port
    assert state["wol_port"] == sim.wol_port and state["mac"] == "02:ba:1b:05:00:01"

    faults = client.post(control + "/faults", json={"latency_s": 0.01,
                                                    "fail": {"status": 502, "count": 1}}).json()
    assert faults["fail"]["status"] == 502 and faults["latency_s"] == 0.01
    assert client.get(sim.base_url + "/api/ping").status_code == 502
    assert client.delete(control + "/faults").json()["fail"] is None
    assert client.post(control + "/faults", json={"bogus": 1}).status_code == 400

    counters = client.get(control + "/counters").json()
    assert counters["request_count"] == 1
    assert counters["requests"][0]["state"] == "awake"
    assert counters["requests"][0]["status"] == 502

    assert client.post(control + "/suspend", json={}).json()["state"] == "suspended"
    assert port_refuses(sim.port)
    assert client.get(control + "/state").json()["state"] == "suspended"
    send_magic_packet(sim.mac, "127.0.0.1", sim.wol_port)
    assert client.post(control + "/wait", json={"state": "awake", "timeout_s": 3}).json()["ok"]
    assert client.get(control + "/counters").json()["boot_count"] == 1
    assert client.post(control + "/reset-counters").json()["request_count"] == 0
    assert client.post(control + "/suspend", json={"mode": "off"}).json()["state"] == "off"
    assert client.post(control + "/wake").json()["state"] == "awake"
    config = client.post(control + "/config", json={"boot_delay_s": 0.05, "sleep_mode": "soft"})
    assert config.json()["boot_delay_s"] == 0.05 and config.json()["sleep_mode"] == "soft"
    assert client.get(control + "/nope").status_code == 404


def test_cli_process_prints_ports_and_serves_the_sample_tree(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "balupi.sim.nas", "--root", str(tmp_path / "nas"),
         "--user", "admin:pw", "--user", "carol:cpw", "--mac", "AA-BB-CC-DD-EE-01",
         "--boot-delay-s", "0.05", "--seed-sample-tree"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(tmp_path))
    try:
        ready = json.loads(process.stdout.readline())
        assert ready["event"] == "ready" and ready["mac"] == "aa:bb:cc:dd:ee:01"
        assert ready["users"] == ["admin", "carol"]
        base, control = ready["base_url"], ready["control_url"]
        grusse = get(ready["dav_url"] + quote("Documents/Grüße.txt"), auth=("admin", "pw"))
        assert grusse.status_code == 200 and "Grüße" in grusse.text
        assert get(ready["dav_url"] + quote("Documents/Notizen von carol.txt"),
                   auth=("carol", "cpw")).status_code == 200
        assert get(control + "/suspend", method="POST", json={}).json()["state"] == "suspended"
        with pytest.raises(requests.ConnectionError):
            get(base + "/api/ping", timeout=1)
        send_magic_packet("aa:bb:cc:dd:ee:01", "127.0.0.1", ready["wol_port"])
        assert get(control + "/wait", method="POST", json={"state": "awake"}).json()["ok"]
        assert get(base + "/api/ping").ok
        assert get(control + "/shutdown", method="POST").ok
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    assert "LOOPBACK GUARD" not in process.stderr.read()


def test_seed_sample_tree(tmp_path):
    written = seed_sample_tree(tmp_path, home_users=["dora"])
    names = {p.relative_to(tmp_path).as_posix() for p in written}
    assert "Documents/Grüße.txt" in names
    assert "Photos/2024/Summer Holiday/beach sunset.png" in names
    assert "home/dora/Documents/Notizen von dora.txt" in names
    sizes = [p.stat().st_size for p in written]
    assert min(sizes) == 0 and max(sizes) > 100_000 and len(set(sizes)) > 10
    assert (tmp_path / "Photos/2024/Summer Holiday/beach sunset.png").read_bytes()[:8] == \
        b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "Documents/Taxes 2023/Rechnung 2023-03.pdf").read_bytes().startswith(b"%PDF")
    assert sample_files() == sample_files()  # deterministic


def test_constructor_and_spec_validation(tmp_path):
    with pytest.raises(ValueError):
        SimNas(tmp_path, host="192.0.2.1")
    with pytest.raises(ValueError):
        SimNas(tmp_path, mac="not-a-mac")
    with pytest.raises(ValueError):
        SimNas(tmp_path, users={"a/b": ("x", "user")})
    assert parse_user_spec("admin:pw") == ("admin", "pw", "admin")
    assert parse_user_spec("eve:pw") == ("eve", "pw", "user")
    assert parse_user_spec("eve:pw:admin") == ("eve", "pw", "admin")
    with pytest.raises(ValueError):
        parse_user_spec("nopassword")


def test_non_magic_datagrams_are_ignored(sim):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"hello", ("127.0.0.1", sim.wol_port))
        sock.sendto(magic_packet(sim.mac) + b"x", ("127.0.0.1", sim.wol_port))
    time.sleep(0.1)
    assert sim.magic_packets == []

"""What woke the NAS (issue 11, item 1): every wake recorded with its cause, how long the NAS then
stayed awake and what BaluPi did with the time; GET /api/nas/wakes and GET /api/nas/timeline."""

from __future__ import annotations

import time

from balupi.sim.nas import PowerState
from tests.authkit import BOB, BOB_PASSWORD, api, dav, multi_user_stack
from tests.davkit import listing, wait_until
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

ALICE = (NAS_USER, NAS_PASSWORD)
FILES = {"/photos/beach.jpg": b"sand " * 20_000, "/docs/notes.txt": b"notes\n" * 100}


def wakes(stack, auth=ALICE, **params) -> dict:
    response = api(stack, "GET", "/nas/wakes", auth=auth, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def asleep_with_index(stack_factory, tmp_path, **overrides):
    stack = multi_user_stack(stack_factory, tmp_path, FILES, **overrides)
    listing(stack, "/")
    listing(stack, "/photos")
    listing(stack, "/docs")
    stack.suspend_nas()
    assert not stack.app.nas.is_awake()
    return stack


def test_a_client_miss_records_user_client_address_and_path_and_the_awake_time(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    before = time.time()
    response = dav(stack, "GET", "/photos/beach.jpg", auth=ALICE, headers={"User-Agent": "Explorer-Test/1.0"})
    assert response.status_code == 200 and response.content == FILES["/photos/beach.jpg"]

    found = [w for w in wakes(stack)["wakes"] if w["requested_at"] >= before]
    assert len(found) == 1, found
    wake = found[0]
    assert wake["cause"]["kind"] == "request"
    assert wake["cause"]["user"] == NAS_USER
    assert wake["cause"]["client"] == "Explorer-Test/1.0"
    assert wake["cause"]["address"] == "127.0.0.1"
    assert wake["cause"]["path"] == "/photos/beach.jpg"
    assert wake["cause"]["detail"] == "GET /dav/photos/beach.jpg"
    assert wake["packet_sent"] is True and wake["woke"] is True and wake["ongoing"] is True
    assert wake["wake_s"] >= 0

    time.sleep(0.3)
    stack.suspend_nas()
    ended = next(w for w in wakes(stack)["wakes"] if w["id"] == wake["id"])
    assert ended["ongoing"] is False
    assert ended["awake_s"] >= 0.3
    assert abs(ended["ended_at"] - ended["awake_at"] - ended["awake_s"]) < 0.01


def test_a_nas_that_comes_up_by_itself_is_woken_by_something_else(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    stack.wake_nas()  # the simulator boots without a magic packet from BaluPi; BaluPi's probe sees it
    latest = wakes(stack)["wakes"][0]
    assert latest["cause"]["kind"] == "external"
    assert latest["packet_sent"] is False
    assert "woken by something else" in latest["cause"]["summary"]


def test_a_sync_wake_names_its_pending_changes_and_counts_what_it_synced(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path, sync_max_pending_mb=0.000001)  # any change wakes it
    for name in ("a.txt", "b.txt"):
        assert dav(stack, "PUT", f"/docs/{name}", auth=ALICE, data=b"new").status_code in (201, 204)
    assert stack.nas.state is PowerState.SUSPENDED
    stack.app.sync.tick()  # what the scheduler runs every sync_interval_s
    assert wait_until(lambda: stack.app.sync.pending()["count"] == 0, timeout_s=30)
    wake = next(w for w in wakes(stack)["wakes"] if w["cause"]["kind"] == "sync")
    assert wake["cause"]["pending_changes"] == 2
    assert "sync of 2 pending change(s)" in wake["cause"]["summary"]
    assert wait_until(lambda: next(w for w in wakes(stack)["wakes"] if w["id"] == wake["id"])
                      ["used_for"]["changes_synced"] >= 2)


def test_sync_now_with_a_wake_is_a_manual_wake_naming_who_and_what_waits(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    assert dav(stack, "PUT", "/docs/c.txt", auth=ALICE, data=b"new").status_code in (201, 204)
    response = api(stack, "POST", "/cache/sync", auth=ALICE, json={"wake": True})
    assert response.status_code == 202, response.text
    assert wait_until(lambda: stack.app.sync.pending()["count"] == 0, timeout_s=30)
    wake = next(w for w in wakes(stack)["wakes"] if w["packet_sent"])
    assert wake["cause"]["kind"] == "manual" and wake["cause"]["user"] == NAS_USER
    assert wake["cause"]["pending_changes"] == 1


def test_a_manual_wake_is_recorded_with_who_asked(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    assert api(stack, "POST", "/nas/wol", auth=ALICE, json={}).status_code == 200
    assert wait_until(lambda: wakes(stack)["wakes"][0]["woke"], timeout_s=10)
    wake = wakes(stack)["wakes"][0]
    assert wake["cause"]["kind"] == "manual" and wake["cause"]["user"] == NAS_USER
    assert wake["packet_sent"] is True


def test_paths_and_people_are_shown_to_admins_only(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    assert dav(stack, "GET", "/photos/beach.jpg", auth=ALICE).status_code == 200
    admin = wakes(stack)
    assert admin["paths"] == [{"path": "/photos/beach.jpg", "wakes": 1}]
    user = wakes(stack, auth=(BOB, BOB_PASSWORD))
    assert user["count"] == admin["count"] and user["paths"] == []
    request_wake = next(w for w in user["wakes"] if w["cause"]["kind"] == "request")
    assert request_wake["cause"]["path"] is None and request_wake["cause"]["user"] is None
    assert "beach" not in str(user)
    timeline = api(stack, "GET", "/nas/timeline", auth=(BOB, BOB_PASSWORD)).json()
    assert "waking" in [i["state"] for i in timeline["intervals"]]
    assert "beach" not in str(timeline) and NAS_USER not in str(timeline)
    assert "beach" in str(api(stack, "GET", "/nas/timeline", auth=ALICE).json())


def test_wakes_window_and_bad_times(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    assert dav(stack, "GET", "/docs/notes.txt", auth=ALICE).status_code == 200
    assert wakes(stack)["count"] >= 1
    assert wakes(stack, **{"from": time.time() + 60, "to": time.time() + 120})["count"] == 0
    assert api(stack, "GET", "/nas/wakes", auth=ALICE, params={"from": "yesterday"}).status_code == 400
    assert api(stack, "GET", "/nas/wakes", auth=ALICE, params={"from": "2", "to": "1"}).status_code == 400


def test_the_timeline_lists_the_days_states_as_back_to_back_intervals(stack_factory, tmp_path):
    stack = asleep_with_index(stack_factory, tmp_path)
    assert dav(stack, "GET", "/docs/notes.txt", auth=ALICE).status_code == 200
    body = api(stack, "GET", "/nas/timeline", auth=ALICE).json()
    states = [i["state"] for i in body["intervals"]]
    assert "asleep" in states and "waking" in states and states[-1] == "awake"
    for a, b in zip(body["intervals"], body["intervals"][1:]):
        assert a["end"] == b["start"]
    assert body["intervals"][-1]["ongoing"] is True
    assert any(w["cause"]["kind"] == "request" for w in body["wakes"])
    assert body["power"] == [] and body["power_plug_id"] is None  # no plug in this stack
    assert api(stack, "GET", "/nas/timeline", auth=ALICE, params={"day": "2020-13-01"}).status_code == 400
    assert api(stack, "GET", "/nas/timeline", auth=ALICE, params={"day": "2020-01-01"}).json()["intervals"] == []

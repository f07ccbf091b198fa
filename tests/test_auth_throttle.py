"""Issue 6, point 3: failed logins are throttled per client address and per user name with growing
delays, and the answers never tell whether a user exists.
"""

from __future__ import annotations

from balupi.auth.throttle import FORGET_AFTER_S, Throttle
from tests.authkit import BOB, BOB_PASSWORD, api, dav, from_address, multi_user_stack
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttle(clock: Clock) -> Throttle:
    return Throttle(free_attempts=3, base_delay_s=1.0, max_delay_s=60.0, clock=clock)


# -- the rules -----------------------------------------------------------------------------------


def test_delays_start_after_the_free_attempts_and_double_up_to_the_cap():
    t = throttle(Clock())
    assert [t.delay_after(n) for n in range(0, 12)] == [0, 0, 0, 1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_failing_address_waits_for_its_delay_whatever_name_it_tries():
    clock = Clock()
    t = throttle(clock)
    for name in ("alice", "bob", "carol"):
        assert t.retry_after_s("10.0.0.5", name) == 0
        t.failed("10.0.0.5", name)
    assert t.retry_after_s("10.0.0.5", "erin") == 1.0  # three failures from this address: the fourth waits
    assert t.retry_after_s("10.0.0.6", "erin") == 0  # another address, another name: free
    clock.now += 1.0
    assert t.retry_after_s("10.0.0.5", "erin") == 0


def test_a_name_attacked_from_many_addresses_is_delayed_everywhere():
    t = throttle(Clock())
    for i in range(4):
        t.failed(f"10.0.0.{i}", "Alice")
    assert t.retry_after_s("192.168.1.99", "alice") == 2.0  # names compare without case


def test_a_success_clears_the_counters_of_its_address_and_name():
    t = throttle(Clock())
    for _ in range(5):
        t.failed("10.0.0.5", "bob")
    t.succeeded("10.0.0.5", "bob")
    assert t.retry_after_s("10.0.0.5", "bob") == 0
    t.failed("10.0.0.5", "bob")
    assert t.retry_after_s("10.0.0.5", "bob") == 0  # counting starts over


def test_failures_are_forgotten_a_day_after_the_last_one():
    clock = Clock()
    t = throttle(clock)
    for _ in range(10):
        t.failed("10.0.0.5", "bob")
    clock.now += FORGET_AFTER_S + 1
    t.failed("10.0.0.5", "bob")
    assert t.retry_after_s("10.0.0.5", "bob") == 0


def test_known_and_unknown_names_are_counted_alike():
    t = throttle(Clock())
    for name in ("alice", "nobody-by-this-name"):
        for _ in range(4):
            t.failed("10.0.0.5" if name == "alice" else "10.0.0.6", name)
    assert t.retry_after_s("10.0.0.5", "alice") == t.retry_after_s("10.0.0.6", "nobody-by-this-name") == 2.0


# -- over HTTP -----------------------------------------------------------------------------------


def sequence(stack, username: str, password: str, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        r = dav(stack, "PROPFIND", "/", auth=(username, password), headers={"Depth": "0"})
        out.append((r.status_code, r.headers.get("Retry-After"), r.headers.get("WWW-Authenticate"), r.content))
    return out


def test_after_the_free_attempts_even_the_right_password_waits(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_throttle_free_attempts=2, auth_throttle_base_delay_s=600, auth_throttle_max_delay_s=600)
    statuses = [s[0] for s in sequence(stack, BOB, "wrong", 3)]
    asked = stack.nas.request_count("POST", "/api/auth/login")

    right = dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"})

    assert statuses == [401, 401, 429]
    assert right.status_code == 429 and right.headers["Retry-After"] == "600"
    assert stack.nas.request_count("POST", "/api/auth/login") == asked == 2  # not even asked
    assert b"try again" in right.content


def test_throttled_answers_are_the_same_for_a_known_and_an_unknown_name(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_throttle_free_attempts=2,
                             auth_throttle_base_delay_s=600, auth_throttle_max_delay_s=600)

    def answers(source: str, username: str) -> list[tuple]:
        out = []
        for _ in range(4):
            r = from_address(source, "PROPFIND", stack.url("/"), auth=(username, "wrong"), headers={"Depth": "0"})
            out.append((r.status, r.headers.get("Retry-After"), r.headers.get("WWW-Authenticate"), r.data))
        return out

    known = answers("127.0.0.2", BOB)  # two clients, so the address delays do not mix
    unknown = answers("127.0.0.3", "nobody")

    assert known == unknown
    assert [k[0] for k in known] == [401, 401, 429, 429]


def test_a_throttled_address_does_not_stop_other_clients(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_throttle_free_attempts=1,
                             auth_throttle_base_delay_s=600, auth_throttle_max_delay_s=600)
    for name in ("x1", "x2"):
        from_address("127.0.0.2", "PROPFIND", stack.url("/"), auth=(name, "guess"), headers={"Depth": "0"})
    assert from_address("127.0.0.2", "PROPFIND", stack.url("/"), auth=("x3", "g"), headers={"Depth": "0"}).status == 429

    ok = from_address("127.0.0.3", "PROPFIND", stack.url("/"), auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"})
    assert ok.status == 207


def test_the_api_login_is_throttled_alike(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_throttle_free_attempts=1, auth_throttle_base_delay_s=600, auth_throttle_max_delay_s=600)
    wrong = api(stack, "POST", "/auth/login", json={"username": BOB, "password": "wrong"})
    throttled = api(stack, "POST", "/auth/login", json={"username": BOB, "password": BOB_PASSWORD})
    basic = api(stack, "GET", "/auth/me", auth=(BOB, BOB_PASSWORD))

    assert wrong.status_code == 401
    assert throttled.status_code == 429 and throttled.json()["retry_after_s"] == 600
    assert throttled.headers["Retry-After"] == "600"
    assert basic.status_code == 429


def test_a_user_already_logged_in_is_not_locked_out_by_someone_guessing_their_name(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_throttle_free_attempts=1, auth_throttle_base_delay_s=600, auth_throttle_max_delay_s=600)
    assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207
    assert [s[0] for s in sequence(stack, BOB, "guess", 2)] == [401, 429]

    assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207


def test_the_shared_clients_of_a_household_are_not_throttled_by_successes(stack_factory, tmp_path):
    stack = multi_user_stack(stack_factory, tmp_path, auth_throttle_free_attempts=1, auth_throttle_base_delay_s=600, auth_throttle_max_delay_s=600)
    for _ in range(20):
        assert dav(stack, "PROPFIND", "/", auth=(NAS_USER, NAS_PASSWORD), headers={"Depth": "0"}).status_code == 207
        assert dav(stack, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207

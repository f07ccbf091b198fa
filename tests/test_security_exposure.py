"""Issue 16, findings 5, 12 and 13: what BaluPi tells and leaves readable. URLs with user info are
refused (and never echoed); anonymous answers do not name the NAS; other users' file names in wake
causes are for admins only; the data directory and the database files are private whatever the
umask. Two NAS users with separate roots; the NAS awake and asleep.
"""

from __future__ import annotations

import os
import stat

import pytest

from balupi.errors import ConfigError
from tests.authkit import BOB, BOB_PASSWORD, CAROL, CAROL_PASSWORD, api, dav, multi_user_stack
from tests.davkit import wait_downloads_idle
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

SECRET = "svc-Pa55word-in-the-url"


@pytest.mark.parametrize("name", ["nas_webdav_url", "nas_url"])
def test_a_url_with_user_info_is_refused_without_echoing_it(settings_factory, name):
    with pytest.raises(ConfigError) as refused:
        settings_factory(**{name: f"http://svc:{SECRET}@127.0.0.1:9/dav/"})
    message = str(refused.value)
    assert SECRET not in message and "svc" not in message
    assert "user name or password" in message and name.upper() in message.upper()


@pytest.fixture
def users(stack_factory, tmp_path):
    return multi_user_stack(stack_factory, tmp_path, {"/home/carol/carol-diary.txt": b"dear diary",
                                                      "/home/bob/b.txt": b"b"})


@pytest.mark.parametrize("asleep", [False, True], ids=["awake", "asleep"])
def test_anonymous_answers_do_not_name_the_nas(users, asleep):
    if asleep:
        users.suspend_nas()
    health = api(users, "GET", "/health")
    assert health.status_code == 200 and health.json()["nas"]["configured"] is True
    assert "url" not in health.json()["nas"]
    for leak in (users.nas.dav_url, users.nas.base_url, f"127.0.0.1:{users.nas.port}"):
        assert leak not in health.text


def test_wake_causes_naming_paths_are_shown_only_to_admins(users):
    assert dav(users, "PROPFIND", "/", auth=(CAROL, CAROL_PASSWORD), headers={"Depth": "1"}).status_code == 207
    assert dav(users, "PROPFIND", "/", auth=(BOB, BOB_PASSWORD), headers={"Depth": "0"}).status_code == 207
    users.suspend_nas()
    assert dav(users, "GET", "/carol-diary.txt", auth=(CAROL, CAROL_PASSWORD)).content == b"dear diary"  # wakes it
    wait_downloads_idle(users.app)

    admin = api(users, "GET", "/nas/status", auth=(NAS_USER, NAS_PASSWORD)).json()
    assert any("carol-diary.txt" in t["cause"] for t in admin["transitions"])
    assert admin["url"] == users.nas.dav_url
    for auth in ((BOB, BOB_PASSWORD), (CAROL, CAROL_PASSWORD)):
        answer = api(users, "GET", "/nas/status", auth=auth)
        assert answer.status_code == 200
        assert "carol-diary" not in answer.text and "url" not in answer.json()
        assert users.nas.dav_url not in answer.text
        causes = [t["cause"] for t in answer.json()["transitions"]]
        assert any(c.startswith("wake: GET (a path") for c in causes), causes  # that it woke, not for what


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_data_dir_and_database_files_are_private_whatever_the_umask(settings_factory, running_server, tmp_path):
    old_umask = os.umask(0o002)  # as permissive as a desktop session's
    try:
        server = running_server(settings_factory(data_dir=tmp_path / "fresh" / "data", cache_dir=tmp_path / "fresh" / "cache"))
        assert api_ok(server)
        data = tmp_path / "fresh" / "data"
        assert mode(data) == 0o700 and mode(tmp_path / "fresh" / "cache") == 0o700
        for name in ("balupi.db", "balupi.db-wal", "balupi.db-shm", "secret.key"):
            assert mode(data / name) == 0o600, name
        server.stop()

        # An existing install made under a loose umask is tightened at the next start.
        os.chmod(data, 0o755)
        for name in ("balupi.db", "balupi.db-wal", "balupi.db-shm"):
            if (data / name).exists():  # a clean stop may have folded the WAL away
                os.chmod(data / name, 0o644)
        server = running_server(settings_factory(data_dir=data, cache_dir=tmp_path / "fresh" / "cache"))
        assert api_ok(server)
        assert mode(data) == 0o700
        for name in ("balupi.db", "balupi.db-wal", "balupi.db-shm"):
            assert mode(data / name) == 0o600, name
    finally:
        os.umask(old_umask)


def api_ok(server) -> bool:
    import requests

    with requests.Session() as s:
        s.trust_env = False
        return s.get(server.url + "/api/health", timeout=10).status_code == 200

"""`balupi energy calibrate`: thresholds proposed from the `nas` plug's recorded samples."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from balupi import cli
from balupi.db import open_database


def record_nas_samples(data_dir: Path, powers: list[float]) -> None:
    db = open_database(data_dir / "balupi.db")
    try:
        with db.write() as d:
            plug_id = d.execute(
                "INSERT INTO energy_plugs (name, role, host, config_json) VALUES ('NAS', 'nas', '127.0.0.1', '{}')"
            ).lastrowid
            now = time.time()
            d.conn.executemany(
                "INSERT INTO energy_samples (plug_id, at, power_w) VALUES (?, ?, ?)",
                [(plug_id, now - 30 * i, p) for i, p in enumerate(powers)],
            )
    finally:
        db.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(__import__("os").environ):
        if name.startswith("BALUPI_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BALUPI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BALUPI_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "data").mkdir()
    return tmp_path / "data"


def test_calibrate_proposes_thresholds_between_the_nas_power_clusters(env: Path, capsys: pytest.CaptureFixture) -> None:
    rng = random.Random(7)
    powers = ([rng.gauss(1.4, 0.1) for _ in range(1500)]  # suspended, below the default 2 W "off" line
              + [rng.gauss(31.0, 1.5) for _ in range(800)]  # idle, above the default 25 W "active" line
              + [rng.gauss(52.0, 4.0) for _ in range(300)])  # busy
    record_nas_samples(env, powers)
    assert cli.main(["energy", "calibrate", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    proposed = out["proposed"]
    assert out["samples"] == 2600
    assert proposed["nas_power_off_below_w"] < 1.4 < proposed["nas_power_standby_below_w"] < 31
    assert 31 < proposed["nas_power_idle_below_w"] < 52
    assert [c["state"] for c in out["clusters"]] == ["standby", "idle", "active"]


def test_calibrate_prints_the_settings_to_use(env: Path, capsys: pytest.CaptureFixture) -> None:
    record_nas_samples(env, [4.0] * 500 + [20.0] * 500)
    assert cli.main(["energy", "calibrate"]) == 0
    text = capsys.readouterr().out
    assert "nas_power_standby_below_w = " in text and "current" in text and "proposed" in text


def test_calibrate_without_a_nas_plug_says_what_to_do(env: Path, capsys: pytest.CaptureFixture) -> None:
    open_database(env / "balupi.db").close()
    assert cli.main(["energy", "calibrate"]) == 1
    assert "no plug has the role 'nas'" in capsys.readouterr().err

"""The dashboard's cost to the server: page weight, and `balupi serve`'s RSS with the dashboard open
in headless Chromium, refreshing itself, for 10 minutes (issue 11: RSS must not grow).

    .venv/bin/python -m bench.dashboard_rss                  # 10 minutes
    .venv/bin/python -m bench.dashboard_rss --duration-s 60  # a smoke run

What runs, all on 127.0.0.1: the simulated NAS (the sample tree, asleep after a warm-up) and a
simulated Tapo plug in front of it (in this process), `balupi serve` as a subprocess configured like
`balupi demo` (the plug registered as the `nas` plug through the API), and Chromium (Debian's
`chromium` and `chromium-driver`, driven by Selenium, offline) logged in to the dashboard, which
refreshes every 15 s (lists and charts every 60 s). Every 10 s the server's RSS is sampled. Output:
one JSON object (page weight, RSS at start, after the first two minutes, at the end, min/max, the
requests the page made) on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
from balupi.demo import DEMO_PASSWORD, DEMO_USER, demo_settings, nas_power_w, write_settings_file
from balupi.sim.nas import DEFAULT_MAC, SimNas, seed_sample_tree
from balupi.sim.plug import SimulatedPlug
from bench.servers import free_port, wait_until_answers

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SAMPLE_EVERY_S = 10.0
WARM_UP_S = 120.0  # RSS after the first two minutes is the baseline growth is measured against


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--no-proxy-server", f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def page_weight(url: str) -> dict:
    sizes = {"/": len(requests.get(url + "/", headers={"Accept": "text/html"}, timeout=10).content)}
    for asset in ("app.js", "style.css", "icon.svg"):
        sizes[f"/ui/{asset}"] = len(requests.get(f"{url}/ui/{asset}", timeout=10).content)
    return {"files": sizes, "total_bytes": sum(sizes.values())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--no-browser", action="store_true", help="the same without the page open (the baseline)")
    parser.add_argument("--server-env", action="append", default=[], metavar="BALUPI_X=VALUE",
                        help="a setting for the server, e.g. BALUPI_SERVER_THREADS=4")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="balupi-dash-bench-"))
    seed_sample_tree(tmp / "nas")
    nas = SimNas(tmp / "nas", users={DEMO_USER: (DEMO_PASSWORD, "admin")}, mac=DEFAULT_MAC, control_port=None,
                 boot_delay_s=2.0, idle_suspend_s=None).start()
    plug = SimulatedPlug(username="demo@balupi.invalid", password="demo-plug", nickname="NAS").start()
    plug.follow(lambda: nas_power_w(nas), tick_s=1.0)
    port = free_port()
    settings_path = tmp / "balupi.toml"
    write_settings_file(settings_path, demo_settings(tmp, port, nas, 2.0, "WARNING"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALUPI_")}
    env["BALUPI_CONFIG"] = str(settings_path)
    env.update(item.split("=", 1) for item in args.server_env)
    log = open(tmp / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "balupi", "serve"], cwd=tmp, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    driver = None
    try:
        wait_until_answers(port, path="/api/health", process=server, accept=lambda status: status < 400,
                           timeout_s=60.0, name=url, error=SystemExit)
        admin = requests.Session()
        admin.auth = (DEMO_USER, DEMO_PASSWORD)
        added = admin.post(url + "/api/tapo/devices", json={"host": "127.0.0.1", "port": plug.port, "name": "NAS",
                                                            "role": "nas"}, timeout=30)
        added.raise_for_status()
        for folder in ("/", "/Documents/", "/Photos/"):  # a client's first look, while the NAS is awake
            admin.request("PROPFIND", url + "/dav" + folder, headers={"Depth": "1"}, timeout=30)
        nas.suspend()
        admin.get(url + "/dav/Documents/Einkaufsliste.txt", headers={"User-Agent": "bench-client/1.0"}, timeout=60)
        weight = page_weight(url)

        if not args.no_browser:
            driver = browser(tmp / "chromium")
            driver.get(url + "/")
            form = driver.find_element("id", "login-form")
            form.find_element("name", "username").send_keys(DEMO_USER)
            form.find_element("name", "password").send_keys(DEMO_PASSWORD)
            form.find_element("css selector", "button[type=submit]").click()

        proc = psutil.Process(server.pid)
        started = time.monotonic()
        samples: list[tuple[float, float]] = []
        while time.monotonic() - started < args.duration_s:
            samples.append((round(time.monotonic() - started, 1), proc.memory_info().rss / 1e6))
            time.sleep(SAMPLE_EVERY_S)
        samples.append((round(time.monotonic() - started, 1), proc.memory_info().rss / 1e6))
        refreshes = int(driver.execute_script("return document.body.dataset.loaded || 0")) if driver else 0
        after_warm_up = [rss for t, rss in samples if t >= min(WARM_UP_S, args.duration_s / 2)]
        last_minute = [rss for t, rss in samples if t >= samples[-1][0] - 60]
        baseline = statistics.median(after_warm_up[:6])
        result = {
            "duration_s": args.duration_s,
            "page_weight": weight,
            "page_refreshes": refreshes,
            "rss_mb": {
                "at_login": round(samples[0][1], 1),
                "after_warm_up_median": round(baseline, 1),
                "last_minute_median": round(statistics.median(last_minute), 1),
                "min": round(min(r for _, r in samples), 1),
                "max": round(max(r for _, r in samples), 1),
                "growth_after_warm_up": round(statistics.median(last_minute) - baseline, 1),
            },
            "samples": samples,
            "load_avg": os.getloadavg(),
        }
        print(json.dumps(result, indent=1))
        return 0
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        plug.stop()
        nas.stop()
        log.close()


if __name__ == "__main__":
    sys.exit(main())

"""The dashboard in a real browser (issue 11, item 3): headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by Selenium, which is told where the driver is so it never downloads
one) against BaluPi with the simulated NAS and plug. The figures the page shows must equal the
API's; a Pin from "what woke the NAS" must reach the API; screenshots at desktop and phone width
are saved in the test's tmp directory. On embedded defaults (no NAS, no plug) the page says what is
not configured, without errors."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from tests.authkit import api, dav
from tests.dashkit import stack_with_plug
from tests.davkit import listing, wait_downloads_idle
from tests.stack import NAS_PASSWORD, NAS_USER, stack_factory  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ALICE = (NAS_USER, NAS_PASSWORD)
CLIENT = "BrowserTest-Client/1.0"
FILES = {"/photos/beach.jpg": b"sand " * 40_000, "/docs/notes.txt": b"notes\n" * 500, "/docs/plan.pdf": b"%PDF" * 9000}
PAGE_TIMEOUT_S = 30.0
STATE_NAMES = {"asleep": "Asleep", "waking": "Waking", "awake": "Awake", "unreachable": "Unreachable",
               "unknown": "Unknown", "suspending": "Going to sleep"}
ARTIFACTS = os.environ.get("BALUPI_TEST_ARTIFACTS")  # also copy the screenshots here (CI uploads it)


def browser_or_skip(tmp_path: Path):
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser test, but {', '.join(missing)} is missing (scripts/test-deps.sh installs it)")
    if missing:
        pytest.skip(f"no browser installed ({', '.join(missing)} missing): apt-get install chromium chromium-driver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a browser or driver
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--no-proxy-server", f"--user-data-dir={tmp_path / 'chromium-profile'}",
                 "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT_S)
    return driver


def wait_for(driver, predicate, what: str, timeout_s: float = PAGE_TIMEOUT_S):
    deadline = time.monotonic() + timeout_s
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the element is being replaced by a refresh: ask again
            last_error = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} ({last_error!r}); page: {driver.find_element('tag name', 'body').text[:2000]}")


def text(driver, element_id: str) -> str:
    return driver.find_element("id", element_id).text


def screenshots(driver, tmp_path: Path, name: str) -> list[Path]:
    """Full-page screenshots at desktop and phone width (device metrics set over DevTools)."""
    saved = []
    for label, width, mobile in (("desktop", 1280, False), ("phone", 390, True)):
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": mobile})
        time.sleep(0.3)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
        time.sleep(0.3)
        path = tmp_path / f"{name}-{label}.png"
        path.write_bytes(driver.get_screenshot_as_png())
        saved.append(path)
        if ARTIFACTS:
            Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(ARTIFACTS) / path.name)
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    print("screenshots:", *saved)
    return saved


def page_errors(driver) -> list[str]:
    """Console errors (a CSP violation, a script error, a failed request) since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


@pytest.fixture
def driver(tmp_path):
    d = browser_or_skip(tmp_path)
    yield d
    d.quit()


def test_the_dashboard_shows_the_apis_figures_and_pins_what_woke_the_nas(driver, stack_factory, tmp_path):
    ps = stack_with_plug(stack_factory, tmp_path, FILES, power_w=None)  # the plug reads what the NAS draws
    stack = ps.stack
    try:
        for folder in ("/", "/photos", "/docs"):
            listing(stack, folder)
        assert dav(stack, "GET", "/docs/notes.txt", auth=ALICE).status_code == 200  # cached: a hit later
        wait_downloads_idle(stack.app)
        stack.suspend_nas()
        stack.app.energy.poll_all(wait=True)
        # The wake the page must show: a client's miss while the NAS sleeps.
        response = dav(stack, "GET", "/photos/beach.jpg", auth=ALICE, headers={"User-Agent": CLIENT})
        assert response.status_code == 200
        wait_downloads_idle(stack.app)
        for _ in range(3):
            assert dav(stack, "GET", "/docs/notes.txt", auth=ALICE).status_code == 200
        stack.app.energy.poll_all(wait=True)

        driver.get(stack.server.url + "/")
        form = wait_for(driver, lambda: driver.find_element("id", "login-form").is_displayed() and
                        driver.find_element("id", "login-form"), "the login form")
        form.find_element("name", "username").send_keys(NAS_USER)
        form.find_element("name", "password").send_keys(NAS_PASSWORD)
        form.find_element("css selector", "button[type=submit]").click()
        wait_for(driver, lambda: driver.execute_script("return document.body.dataset.loaded"), "the first refresh")
        assert driver.execute_script("return sessionStorage.getItem('balupi.token')")  # kept for this tab only

        def same(element_id: str, from_api):
            """The page shows what the API answers (asked before and after: a poll may fall between)."""
            before = from_api()
            wait_for(driver, lambda: text(driver, element_id) in (before, from_api()),
                     f"#{element_id} to show {before!r} (shows {text(driver, element_id)!r})", timeout_s=20)

        get = lambda path: api(stack, "GET", path, auth=ALICE).json()  # noqa: E731
        same("nas-state", lambda: STATE_NAMES[get("/nas/status")["nas_state"]])
        assert text(driver, "nas-state") == "Awake"

        def nas_power():
            device = next(d for d in get("/energy/current")["devices"] if d["role"] == "nas")
            return f"{device['power_w']:.1f} W"
        same("nas-power", nas_power)
        assert text(driver, "nas-power") in ("25.0 W", "45.0 W")  # idle or busy, as the simulated plug reads
        same("today-kwh", lambda: f"{get('/energy/summary')['today']['energy_wh'] / 1000:.3f} kWh")
        same("hit-rate", lambda: f"{get('/cache/stats')['hit_rate_percent']:.1f} %")
        assert text(driver, "hit-rate") == "60.0 %"  # 3 hits; 2 misses (notes.txt at first, beach.jpg)
        same("pending", lambda: str(get("/cache/stats")["pending_changes"]))

        wake = next(w for w in get("/nas/wakes")["wakes"] if w["cause"]["kind"] == "request")
        assert wake["cause"]["client"] == CLIENT and wake["cause"]["path"] == "/photos/beach.jpg"
        row = wait_for(driver, lambda: driver.find_element("css selector", f"#wake-list li.wake[data-id='{wake['id']}']"),
                       "the wake in the list")
        assert wake["cause"]["summary"] in row.text
        assert f"request by {NAS_USER} ({CLIENT})" in row.text
        mark = driver.find_element("css selector", "#timeline circle.mark[data-kind='request']")
        driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", mark)
        wait_for(driver, lambda: wake["cause"]["summary"] in text(driver, "timeline-detail"), "the wake's cause on tap")
        assert "a client's request: 1" in text(driver, "wake-kinds")

        shots = screenshots(driver, tmp_path, "dashboard")
        assert all(p.stat().st_size > 10_000 for p in shots)

        button = driver.find_element("css selector", "#wake-paths button.pin[data-path='/photos/beach.jpg']")
        button.click()
        wait_for(driver, lambda: "Pinned /photos/beach.jpg" in text(driver, "toast"), "the pin's confirmation")
        pins = {p["pattern"]: p for p in get("/cache/pins")["pins"]}
        assert pins["/photos/beach.jpg"]["added_by"] == NAS_USER and pins["/photos/beach.jpg"]["cached_files"] == 1
        wait_for(driver, lambda: driver.find_element("css selector", "#pins li.pinned[data-pattern='/photos/beach.jpg']"),
                 "the pin in the pinned list")
        assert page_errors(driver) == []
    finally:
        ps.plug.stop()


def test_on_embedded_defaults_the_page_says_what_is_not_configured(driver, running_server, tmp_path):
    server = running_server()  # no NAS, no plug: what `pip install` and a first start give
    driver.get(server.url + "/")
    wait_for(driver, lambda: driver.execute_script("return document.body.dataset.loaded"), "the first refresh")
    assert not driver.find_element("id", "login").is_displayed()  # nothing to log in against: open mode
    assert text(driver, "nas-state") == "Not configured"
    assert "No NAS is configured" in text(driver, "banner")
    assert "No plug is added yet" in driver.find_element("id", "energy-off").text
    assert text(driver, "pending") == "0"
    assert text(driver, "hit-rate") == "–"
    assert "No NAS configured" in text(driver, "timeline")
    body = driver.find_element("tag name", "body").text
    assert "error" not in body.lower() and "undefined" not in body and "NaN" not in body
    screenshots(driver, tmp_path, "embedded")
    assert page_errors(driver) == []


def test_the_page_weighs_under_200_kb(running_server):
    server = running_server()
    total = 0
    with requests.Session() as s:
        s.trust_env = False
        page = s.get(server.url + "/", headers={"Accept": "text/html"})
        total += len(page.content)
        for asset in ("app.js", "style.css", "icon.svg"):
            got = s.get(server.url + "/ui/" + asset)
            assert got.status_code == 200
            total += len(got.content)
    assert total < 200_000, total
    print(json.dumps({"page_weight_bytes": total}))

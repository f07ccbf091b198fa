"""The files around the code stay in step with it: README commands, CI script, deploy files, docs."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def readme_commands_before(heading: str) -> list[str]:
    """The shell code blocks of the README above `heading`."""
    top = README.split(heading, 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", top, re.S)]


def readme_test_command() -> str:
    after_marker = README.split("<!-- test-command -->", 1)[1]
    return re.search(r"```sh\n(.*?)\n```", after_marker, re.S).group(1)


@pytest.mark.parametrize("script", ["scripts/install.sh", "scripts/test-deps.sh", ".ci/run"])
def test_shell_scripts_parse_and_are_strict(script):
    path = REPO_ROOT / script
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "set -euo pipefail" in path.read_text()


def test_readme_gives_exactly_two_single_line_commands_near_the_top():
    commands = readme_commands_before("## Configuration")
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    run, test = commands
    assert run.endswith("balupi serve")
    assert test == readme_test_command()
    assert test.endswith("pytest")


def test_the_readme_test_command_installs_the_test_packages_itself():
    script = (REPO_ROOT / "scripts" / "test-deps.sh").read_text()
    packages = shlex.split(re.search(r'^DEBIAN_PACKAGES="(.*)"$', script, re.M).group(1))
    assert "litmus" in packages
    assert readme_test_command().startswith("scripts/test-deps.sh && ")
    assert "sudo" not in readme_test_command()  # root on a minimal Debian has no sudo
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci  # it runs the README's command, not its own copy


def unit() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in (REPO_ROOT / "etc" / "balupi.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            directives.setdefault(key.strip(), []).append(value.strip())
    return directives


def test_systemd_unit_is_hardened_and_can_write_what_it_needs():
    d = unit()
    for key, value in {
        "User": "balupi",
        "NoNewPrivileges": "true",
        "ProtectSystem": "strict",
        "ProtectHome": "true",
        "PrivateTmp": "true",
        "Restart": "on-failure",
        "EnvironmentFile": "-/etc/balupi/balupi.env",
    }.items():
        assert d[key] == [value], key
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]  # READY=1 over NOTIFY_SOCKET
    assert int(d["WatchdogSec"][0]) >= 30  # pinged every WatchdogSec/2 while healthy (tests/test_systemd.py)
    environment = dict(item.split("=", 1) for item in d["Environment"])
    writable = " ".join(d["ReadWritePaths"]).replace("-/", "/").split()
    for name in ("BALUPI_DATA_DIR", "BALUPI_CACHE_DIR"):
        path = Path(environment[name])
        assert any(path == Path(w) or Path(w) in path.parents for w in writable), name
    assert d["ExecStart"] == ["/opt/balupi/venv/bin/balupi serve"]


def test_systemd_unit_allows_the_documented_descriptor_budget():
    from balupi.limits import DESCRIPTOR_LIMIT, descriptor_budget
    from balupi.settings import load_settings

    assert unit()["LimitNOFILE"] == [str(DESCRIPTOR_LIMIT)]
    budget = descriptor_budget(load_settings(env={}, cwd=REPO_ROOT))
    assert budget * 2 <= DESCRIPTOR_LIMIT  # headroom for what the budget does not foresee
    assert f"LimitNOFILE={DESCRIPTOR_LIMIT}" in (REPO_ROOT / "docs" / "reliability.md").read_text()


def test_install_script_installs_what_the_unit_expects():
    script = (REPO_ROOT / "scripts" / "install.sh").read_text()
    d = unit()
    assert "/opt/balupi" in d["ExecStart"][0] and "PREFIX=/opt/balupi" in script
    environment = dict(item.split("=", 1) for item in d["Environment"])
    assert f"DATA_DIR={environment['BALUPI_DATA_DIR']}" in script
    assert f"CACHE_DIR={environment['BALUPI_CACHE_DIR']}" in script
    assert "useradd --system" in script and "SERVICE_USER=balupi" in script


def test_every_api_route_is_documented(running_server):
    server = running_server()
    documented = (REPO_ROOT / "docs" / "api.md").read_text()
    missing = [
        f"{method} /api{pattern}"
        for method, pattern in server.app.api.routes()
        if f"### `{method} /api{pattern}`" not in documented
    ]
    assert missing == [], "add a heading for each to docs/api.md"


def test_architecture_names_every_module_and_package():
    doc = (REPO_ROOT / "docs" / "architecture.md").read_text()
    package = REPO_ROOT / "balupi"
    names = [f"{p.name}" for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    names += [f"{p.name}/" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    missing = [name for name in names if f"`{name}`" not in doc and f"{name}`" not in doc]
    assert missing == [], "describe each in docs/architecture.md"

"""The structure rules of issue 13 (decision 140): import layers, and one owner per table.

- `lint-imports` (import-linter, contracts in setup.cfg) passes: packages import only from the
  layers below them, the simulators and the composition root are never imported by the runtime
  packages, the API never by cache/sync/nas.
- Every table has exactly one owning module, which says so (`OWNS = ("entries",)`); no other module
  runs SQL on it (INSERT INTO / UPDATE / DELETE FROM / FROM / JOIN <table>, or sqlite-utils'
  `db["<table>"]`). Migrations (the modules in `db.SCHEMA_MODULES`) create and alter tables and
  are not runtime SQL.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from balupi.db import SCHEMA_MODULES

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "balupi"

# Modules that still run SQL on another module's table, each with the reason it is not moved yet.
# The test fails when one of these no longer does (so the list only shrinks).
KNOWN_STRAYS: dict[tuple[str, str], str] = {}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, str]:
    # BaluPi's modules (not the simulators) and the example plugins, which use the same tables.
    files = [p for p in sorted(PACKAGE.rglob("*.py")) if "sim" not in p.relative_to(PACKAGE).parts[:1]]
    files += sorted((ROOT / "plugins").glob("*.py"))
    return {_module_name(p): p.read_text(encoding="utf-8") for p in files}


def _declared_owns(source: str) -> tuple[str, ...]:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "OWNS" for t in node.targets):
            value = ast.literal_eval(node.value)
            assert isinstance(value, tuple) and all(isinstance(v, str) for v in value), "OWNS must be a tuple of names"
            return value
    return ()


def _created_in(source: str) -> set[str]:
    return (set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", source))
            | set(re.findall(r"""\bdb\[["'](\w+)["']\]\.create\(""", source)))


def _created_tables(sources: dict[str, str]) -> set[str]:
    return set().union(*(_created_in(sources[name]) for name in SCHEMA_MODULES))


def _sql_pattern(table: str) -> re.Pattern:
    return re.compile(rf"""(?:\b(?:FROM|JOIN|INTO|UPDATE)\s+{table}\b)|(?:\bdb\[["']{table}["']\])""")


def _without_migrations(source: str) -> str:
    """A schema module's source without its `@migrations(...)` functions."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any(
                isinstance(d, ast.Call) and getattr(d.func, "id", None) == "migrations" for d in node.decorator_list):
            for i in range(node.lineno - 1 - len(node.decorator_list), node.end_lineno):
                lines[i] = ""
    return "\n".join(lines)


def _is_package(module: str) -> bool:
    return (ROOT / module.replace(".", "/") / "__init__.py").exists()


def owners() -> dict[str, str]:
    """table -> the module that declares it owns it."""
    found: dict[str, list[str]] = {}
    for module, source in _sources().items():
        for table in _declared_owns(source):
            found.setdefault(table, []).append(module)
    doubly = {t: ms for t, ms in found.items() if len(ms) > 1}
    assert not doubly, f"tables claimed by more than one module: {doubly}"
    return {t: ms[0] for t, ms in found.items()}


def test_every_table_has_exactly_one_declared_owner():
    sources = _sources()
    tables = _created_tables(sources)
    assert {"entries", "journal", "conflicts", "dav_locks", "dav_props"} <= tables  # the scan finds the tables
    owned = owners()
    assert sorted(tables - set(owned)) == [], "tables without an owner (add them to a module's OWNS)"
    assert sorted(set(owned) - tables) == [], "OWNS names a table no migration creates"


def test_only_the_owner_runs_sql_on_its_table():
    sources = _sources()
    owned = owners()
    created = {name: _created_in(sources[name]) for name in SCHEMA_MODULES}
    strays: dict[tuple[str, str], int] = {}
    for table, owner in owned.items():
        pattern = _sql_pattern(table)
        for module, source in sources.items():
            if module == owner or module.startswith(owner + ".") and _is_package(owner):
                continue  # a package that owns a table: its modules share it
            if table in created.get(module, ()):
                source = _without_migrations(source)  # its migrations create and alter the table
            hits = len(pattern.findall(source))
            if hits:
                strays[(module, table)] = hits
    unexpected = {k: v for k, v in strays.items() if k not in KNOWN_STRAYS}
    assert unexpected == {}, ("SQL on a table outside its owner (call the owner's methods instead): "
                              + ", ".join(f"{m} on {t} ({n}x, owner {owned[t]})" for (m, t), n in sorted(unexpected.items())))
    moved = sorted(k for k in KNOWN_STRAYS if k not in strays)
    assert moved == [], f"no longer stray (remove from KNOWN_STRAYS): {moved}"


def test_the_owner_scan_finds_sql_it_should():
    # The pattern catches each form of SQL the code uses, and not a bare word.
    pattern = _sql_pattern("journal")
    for sql in ("SELECT 1 FROM journal WHERE", "INSERT INTO journal (at)", "UPDATE journal SET", "DELETE FROM journal",
                "x JOIN journal j", 'db["journal"].insert'):
        assert pattern.search(sql), sql
    for text in ("the journal of pending changes", "journal.add(d, view)", "FROM journals", 'figures["journal"]'):
        assert not pattern.search(text), text


def test_runtime_packages_never_import_bench():
    offenders = [m for m, source in _sources().items()
                 if m.startswith("balupi.") and re.search(r"^\s*(from|import)\s+bench\b", source, re.M)]
    assert offenders == []


def test_import_layers_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), f"{lint} is missing: install the test extra (pip install -e '.[test]')"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

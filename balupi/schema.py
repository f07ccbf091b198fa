"""The core schema: small tables shared by every subsystem.

Each subsystem keeps its own tables in its own `Migrations` set (see `balupi.db.SCHEMA_MODULES`).
Steps are never edited once released: a change is a new step.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("core")


@migrations(name="0001_initial")
def initial(db):
    # Small key/value facts BaluPi keeps about itself (e.g. first start, schema notes).
    db["kv"].create({"key": str, "value": str}, pk="key")


@migrations(name="0002_nas_transitions")
def nas_transitions(db):
    # Every change of the NAS power state: when, from what, to what, and why.
    db["nas_transitions"].create(
        {"id": int, "at": float, "from_state": str, "to_state": str, "cause": str},
        pk="id",
    )
    db["nas_transitions"].create_index(["at"])

"""Tables of authentication: verifiers of passwords the NAS accepted, for logins while it sleeps.

`auth_verifiers` holds one row per user the NAS has accepted: a salted scrypt verifier of the
password (never the password), the role the NAS reported, the user's view (whose tree the user
sees), and when the NAS last accepted that password (`verified_at`: the offline window counts
from there).
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("auth")


@migrations(name="0001_verifiers")
def verifiers(db):
    db.execute(
        """
        CREATE TABLE auth_verifiers (
            username TEXT PRIMARY KEY,
            verifier TEXT NOT NULL,
            nas_role TEXT NOT NULL,
            view TEXT NOT NULL,
            verified_at REAL NOT NULL,
            created_at REAL NOT NULL
        )
        """
    )

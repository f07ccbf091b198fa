"""Tables of the WebDAV side: the offline index of the NAS tree, pending changes, locks, dead props.

`entries` mirrors the NAS tree as BaluPi last saw it, plus what only the Pi has:
- `path` is the WebDAV path without trailing slash ("/" is the root), `parent` its parent path;
- `etag` is the ETag clients see: it follows the content's versions (`balupi.cache.versions`);
- `nas_etag` is the NAS's ETag of the same content (only for talking to the NAS);
- `cache_key` names the content file in the cache store (NULL: not cached);
- `dirty`: the Pi holds changes the NAS does not have yet; `local_only`: never synced (client noise);
- `listed`: for collections, whether the index knows all members (else a listing may ask the NAS);
- `base_etag`: the NAS version a local change was based on (conflict detection in sync).
`view` scopes the tree per NAS view (user root), "" being the shared view.
"""

from sqlite_utils.migrations import Migrations

migrations = Migrations("dav")


@migrations(name="0001_index")
def index(db):
    db.execute(
        """
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            view TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL,
            parent TEXT,
            name TEXT NOT NULL,
            is_dir INTEGER NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            mtime REAL NOT NULL,
            ctime REAL NOT NULL,
            etag TEXT,
            content_type TEXT,
            cache_key TEXT,
            dirty INTEGER NOT NULL DEFAULT 0,
            local_only INTEGER NOT NULL DEFAULT 0,
            listed INTEGER NOT NULL DEFAULT 0,
            remote INTEGER NOT NULL DEFAULT 0,
            base_etag TEXT,
            hits INTEGER NOT NULL DEFAULT 0,
            last_access REAL
        )
        """
    )
    db.execute("CREATE UNIQUE INDEX entries_view_path ON entries (view, path)")
    db.execute("CREATE INDEX entries_view_parent ON entries (view, parent, name)")
    db.execute("CREATE INDEX entries_cache_key ON entries (cache_key) WHERE cache_key IS NOT NULL")


@migrations(name="0002_journal")
def journal(db):
    # Pending changes for the NAS, applied in id order by the sync worker.
    db.execute(
        """
        CREATE TABLE journal (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            view TEXT NOT NULL DEFAULT '',
            op TEXT NOT NULL,
            path TEXT NOT NULL,
            dest TEXT,
            cache_key TEXT,
            size INTEGER,
            base_etag TEXT,
            state TEXT NOT NULL DEFAULT 'pending',
            attempts INTEGER NOT NULL DEFAULT 0,
            last_error TEXT
        )
        """
    )
    db.execute("CREATE INDEX journal_state ON journal (state, id)")


@migrations(name="0003_locks_props")
def locks_props(db):
    db.execute(
        """
        CREATE TABLE dav_locks (
            token TEXT PRIMARY KEY,
            root TEXT NOT NULL,
            depth TEXT NOT NULL,
            scope TEXT NOT NULL,
            type TEXT NOT NULL,
            owner TEXT,
            principal TEXT,
            timeout REAL NOT NULL,
            expire REAL NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX dav_locks_root ON dav_locks (root)")
    db.execute(
        """
        CREATE TABLE dav_props (
            url TEXT NOT NULL,
            name TEXT NOT NULL,
            value BLOB NOT NULL,
            PRIMARY KEY (url, name)
        )
        """
    )


@migrations(name="0004_sync_and_heat")
def sync_and_heat(db):
    # Write-back: when a failed change may be tried again, and how far an upload got.
    db.execute("ALTER TABLE journal ADD COLUMN next_at REAL NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE journal ADD COLUMN phase TEXT")
    db.execute("ALTER TABLE journal ADD COLUMN done_at REAL")
    # The hot cache: heat_key = log2(decayed access count) + last access / half-life, so that
    # ordering by it is ordering by decayed frequency at any moment (see balupi.cache.heat).
    db.execute("ALTER TABLE entries ADD COLUMN heat REAL NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE entries ADD COLUMN heat_key REAL NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE entries ADD COLUMN listed_at REAL")
    db.execute("CREATE INDEX entries_evictable ON entries (heat_key) WHERE cache_key IS NOT NULL AND dirty = 0")
    db.execute("CREATE INDEX entries_unlisted ON entries (view, listed, is_dir)")
    db.execute(
        """
        CREATE TABLE conflicts (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            view TEXT NOT NULL DEFAULT '',
            path TEXT NOT NULL,
            conflict_path TEXT NOT NULL,
            nas_etag TEXT,
            base_etag TEXT,
            resolved INTEGER NOT NULL DEFAULT 0
        )
        """
    )


@migrations(name="0005_nas_etag")
def nas_etag(db):
    # `etag` becomes the ETag clients see, following content versions (decision 60); the NAS's own
    # ETag of the same content moves to `nas_etag`. Until now a clean, synced entry carried the NAS's
    # ETag as its `etag`: it keeps it (clients see no change) and learns it as `nas_etag` too; a
    # dirty entry's NAS version is its `base_etag`.
    db.execute("ALTER TABLE entries ADD COLUMN nas_etag TEXT")
    db.execute(
        "UPDATE entries SET nas_etag = CASE WHEN dirty = 1 THEN base_etag ELSE etag END"
        " WHERE is_dir = 0 AND remote = 1 AND (dirty = 1 OR etag NOT LIKE 'l-%')"
    )


@migrations(name="0006_damaged_content")
def damaged_content(db):
    # Content found damaged on the Pi's disk (balupi.cache.damage): a pending upload that is never
    # uploaded, kept in quarantine/ and listed with the conflicts (kind 'damaged') for a person.
    db.execute("ALTER TABLE conflicts ADD COLUMN kind TEXT NOT NULL DEFAULT 'conflict'")

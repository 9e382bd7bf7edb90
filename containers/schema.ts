/** A named, versioned list of migrations; each module that keeps state owns one set. */
export interface MigrationSet {
  name: string;
  /** index + 1 is the version; never edit a shipped step, append a new one. */
  steps: readonly string[];
}

export const containerMigrations: MigrationSet = {
  name: 'containers',
  steps: [
    `CREATE TABLE containers (
       name TEXT PRIMARY KEY,
       id TEXT NOT NULL UNIQUE,
       engine_id TEXT,
       image TEXT NOT NULL,
       memory_bytes INTEGER NOT NULL,
       nano_cpus INTEGER NOT NULL,
       disk_bytes INTEGER,
       pids_limit INTEGER NOT NULL,
       volume TEXT NOT NULL,
       phase TEXT NOT NULL CHECK (phase IN ('creating', 'ready', 'deleting')),
       desired TEXT NOT NULL DEFAULT 'running' CHECK (desired IN ('running', 'stopped')),
       cloned_from TEXT,
       created_at TEXT NOT NULL
     ) STRICT;
     CREATE TABLE tokens (
       id TEXT PRIMARY KEY,
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       user TEXT NOT NULL,
       scopes TEXT NOT NULL,
       hash TEXT NOT NULL UNIQUE,
       created_at TEXT NOT NULL,
       revoked_at TEXT
     ) STRICT;
     CREATE INDEX tokens_container ON tokens(container, user);
     CREATE TABLE snapshots (
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       name TEXT NOT NULL,
       path TEXT NOT NULL,
       created_at TEXT NOT NULL,
       PRIMARY KEY (container, name)
     ) STRICT;`,
    // issue 10.4: the domains an operator granted a container (none: any name that is not reserved).
    `CREATE TABLE container_domains (
       container TEXT NOT NULL REFERENCES containers(name) ON DELETE CASCADE,
       pattern TEXT NOT NULL,
       created_at TEXT NOT NULL,
       PRIMARY KEY (container, pattern)
     ) STRICT;`,
    // Snapshots on a schedule, per container: every `every_s` seconds, the newest `keep` automatic ones kept.
    `CREATE TABLE snapshot_schedules (
       container TEXT PRIMARY KEY REFERENCES containers(name) ON DELETE CASCADE,
       every_s INTEGER NOT NULL,
       keep INTEGER NOT NULL,
       next_at TEXT NOT NULL
     ) STRICT;`,
    // The engine container's root layer directory, recorded before it is made a subvolume: a kill in between leaves
    // it moved aside, and then the engine's inspect (the only other way to learn the path) fails.
    `ALTER TABLE containers ADD COLUMN layer_dir TEXT;`,
    // The shared containerd shim the container joins (containers/shim-placement.ts); null: a shim of its own.
    `ALTER TABLE containers ADD COLUMN shim_group TEXT;`,
  ],
};

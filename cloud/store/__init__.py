"""Cloud storage: SQLite through sqlite-utils, idempotent by (device id, sequence)."""

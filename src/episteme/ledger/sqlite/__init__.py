"""The SQLite store, Episteme's embedded default."""

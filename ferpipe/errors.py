"""User-facing errors: each carries a one-line message the CLI and dashboard print as is."""


class FerpipeError(Exception):
    """Base for errors caused by the user's input rather than a bug."""


class InputError(FerpipeError, ValueError):
    """A source that cannot be used: wrong type, corrupt, empty, refused URL."""


class ModelError(FerpipeError, ValueError):
    """An unknown model, or a model file that fails its checksum."""


class DatabaseError(FerpipeError):
    """A database file that cannot be used as it is: not a DuckDB file, truncated, from a newer ferpipe, read-only,
    on a full disk. The message names the file and what is wrong with it; nothing in it was changed."""

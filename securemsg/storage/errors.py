"""Storage errors: what the services see when the database refuses or is unreachable."""

from __future__ import annotations

from securemsg.errors import SecuremsgError


class StorageError(SecuremsgError):
    """The database could not complete the operation; nothing was committed."""


class Conflict(StorageError):
    """A uniqueness rule was violated (e.g. a username that already exists)."""


class NotFound(StorageError):
    """The named row does not exist."""

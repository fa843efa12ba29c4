"""The errors user data can raise: one line, meant for the user, never a traceback."""

from __future__ import annotations

import os


class DataError(ValueError):
    """A problem with the user's data, with a one-line message meant for the user."""


class IngestError(DataError):
    """A file or archive that cannot be used safely; one-line, user-facing message."""


PathLike = str | bytes | os.PathLike

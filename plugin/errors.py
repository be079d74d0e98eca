"""DataError: a problem with user data, worded for the user (file, row, column).

Its own module so that plugin.data and plugin.beir (which data reads BEIR folders with) both raise it
without importing each other; plugin.data re-exports it.
"""

from __future__ import annotations


class DataError(ValueError):
    """A problem with user data, worded for the user (file, row, column)."""

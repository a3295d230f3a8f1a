"""User-facing errors: each says what is wrong and where (file, line, field)."""

from __future__ import annotations


class VTError(Exception):
    """Bad input or an impossible request. The CLI prints it on one line and exits 2."""


class DataError(VTError):
    """A dataset problem, located by file and (where known) line and field."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.path, self.line, self.field, self.reason = path, line, field, message
        where = []
        if path is not None:
            where.append(str(path) + (f":{line}" if line is not None else ""))
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__((", ".join(where) + ": " if where else "") + message)

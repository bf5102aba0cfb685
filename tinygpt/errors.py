"""The error type for user mistakes: the CLI prints its message on one line and exits
non-zero, with no traceback."""


class TinyGPTError(Exception):
    """A problem the user can fix (a bad path, flag value, or missing checkpoint)."""


def warn(message: str) -> None:
    """A one-line warning on stderr (not Python's warnings module, whose output
    names source files)."""
    import sys
    print(f"warning: {message}", file=sys.stderr)


def folder_to_write(path, what: str):
    """``path`` as a Path, after checking that tinygpt can make or use it as a folder: one
    line naming ``what`` (e.g. "--out") otherwise, before any work is done. The path is
    checked as it will be written: a ``~`` the shell left alone is not expanded here either."""
    import os
    from pathlib import Path
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TinyGPTError(f"{what} {path} is a file, not a folder: give a folder's path")
    parent = path
    while not parent.exists():           # the nearest part of the path that exists
        parent = parent.parent
    if not parent.is_dir():
        raise TinyGPTError(f"{what} {path}: {parent} is a file, so no folder can be made there")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TinyGPTError(f"{what} {path}: no permission to write in {parent}")
    return path

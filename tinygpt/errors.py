"""The error type for user mistakes: the CLI prints its message on one line and exits
non-zero, with no traceback."""


class TinyGPTError(Exception):
    """A problem the user can fix (a bad path, flag value, or missing checkpoint)."""


def warn(message: str) -> None:
    """A one-line warning on stderr (not Python's warnings module, whose output
    names source files)."""
    import sys
    print(f"warning: {message}", file=sys.stderr)

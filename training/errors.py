"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class SiqError(Exception):
    """A user-facing error: the message names the problem and, where there is one, the fix."""

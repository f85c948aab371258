"""The one exception type that means "the user asked for something we cannot do".

The command line prints its message as a single line and exits with status 2; nothing
else is caught, so a bug still shows its traceback.
"""


class SelfsupError(Exception):
    """A bad input, a missing file, an unknown name: the message says what and how to fix it."""

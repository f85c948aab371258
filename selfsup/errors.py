"""The one exception type that means "the user asked for something we cannot do".

The command line prints its message as a single line and exits with status 2; nothing
else is caught, so a bug still shows its traceback.
"""


class SelfsupError(Exception):
    """A bad input, a missing file, an unknown name: the message says what and how to fix it."""


class UnreadableFileError(SelfsupError):
    """A file that cannot be decoded in a loader worker. The loader re-raises a worker's
    exception as its type built from the whole worker traceback; this keeps the last line, so
    the command line still prints one."""

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "Traceback" in message:
            message = message.rstrip().splitlines()[-1].partition(": ")[2] or message
        super().__init__(message)

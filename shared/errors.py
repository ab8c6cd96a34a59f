"""The one error kind every entry point treats alike: bad input a person can fix."""


class InputError(Exception):
    """A missing file, a garbled row, an unusable path: the message names the problem and the fix.

    CLIs print it as one line (no traceback) and exit with status 2."""

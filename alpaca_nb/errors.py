"""The one exception type for problems a user can fix (bad input, missing file, bad key)."""


class AlpacaNbError(Exception):
    """A problem the user can fix. The message names the file, line or field, and says what to do.

    The command line prints it without a traceback and exits with status 2.
    """

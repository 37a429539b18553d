"""Exceptions shared by every stage."""


class FacebatchError(Exception):
    """An error the user caused or can fix (bad path, bad option, busy library).

    The CLI prints its message as one line and exits with `exit_code`; library code raises it
    instead of letting an OSError or ValueError surface as a traceback.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PhotoError(Exception):
    """One photo could not be used. It becomes that photo's row (status `error`), never a crash.

    `kind` is a short stable word (`empty_file`, `not_an_image`, `truncated`, ...) so that the
    summary can count errors by kind; the message says what happened in words.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

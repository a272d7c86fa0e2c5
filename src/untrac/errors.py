"""User-facing errors: raised anywhere, printed by the entrypoint as one line."""


class UntracError(Exception):
    """A bad input or unmet precondition the user can fix; the message names the culprit."""

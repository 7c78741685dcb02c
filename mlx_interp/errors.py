"""The one error type the toolkit raises for bad input.

Every message is a single line that names the bad value and what would be valid;
the CLI prints it as ``error: <message>`` and exits with status 2, never a traceback.
"""


class MlxInterpError(Exception):
    """Bad input or an unusable environment, explained in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

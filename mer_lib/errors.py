"""The project's single exception type for user errors."""


class MerError(ValueError):
    """Invalid user input (malformed data file, bad parameter); the message names the culprit and what was expected."""

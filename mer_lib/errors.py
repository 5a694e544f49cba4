"""The project's single exception type for user errors."""


class MerError(ValueError):
    """Raised for invalid user input: malformed data files, bad parameters.

    The message always names the offending file, row, column or parameter and
    says what was expected, so that a user can fix the input without reading
    the code.
    """

"""MerError: the library's one exception type for user errors."""
from __future__ import annotations

import pytest

import mer_lib
from mer_lib import errors
from mer_lib.errors import MerError


def test_mer_error_is_a_value_error():
    assert issubclass(MerError, ValueError) and issubclass(MerError, Exception)
    with pytest.raises(ValueError, match="bad.csv, row 3"):
        raise MerError("bad.csv, row 3: expected a number")


def test_message_is_kept_verbatim():
    message = "ratings.csv: column 'valence' missing"
    err = MerError(message)
    assert str(err) == message and err.args == (message,)


def test_package_exports_the_same_class():
    assert mer_lib.MerError is MerError is errors.MerError
    assert "MerError" in mer_lib.__all__
    assert MerError.__module__ == "mer_lib.errors" and MerError.__doc__

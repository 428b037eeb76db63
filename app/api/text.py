"""Text fields that are stored: the same rules on both stores.

PostgreSQL ``text`` cannot hold NUL (``\\x00``): such a value made the INSERT fail with a 500
on PostgreSQL while SQLite stored it. Every API text field that reaches the store is a
``StoredText``: a NUL is refused with a 422 naming the field, on both stores. (Lone
surrogates never get this far: the JSON body parser refuses them.)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

NO_NUL_PATTERN = "^[^\\x00]*$"


def refuse_nul(value: str) -> str:
    """``value`` unchanged.

    Raises:
        ValueError: it contains a NUL character (a 422 through the request validation handler).
    """
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


StoredText = Annotated[str, AfterValidator(refuse_nul), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
"""A ``str`` without NUL characters (declared in the OpenAPI schema as a pattern)."""

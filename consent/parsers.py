"""The API's JSON parser: DRF's, refusing as malformed (400) what would otherwise end
in a 500 -- JSON nested past Python's recursion limit, and text with NUL characters or
unpaired surrogates (PostgreSQL cannot store the one, UTF-8 cannot encode the other).

A module of its own: DRF imports it while building its views, so it must not import
anything that imports them."""

from __future__ import annotations

import io
import re
from typing import Any

from rest_framework import exceptions, parsers

# A NUL escape, a high surrogate escape not followed by a low one, or a low one not
# preceded by a high one.
_UNSAFE_ESCAPE = re.compile(
    rb"\\u0000"
    rb"|\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with JSON nested past Python's recursion limit refused as
    malformed (400) instead of escaping as a RecursionError (500)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read() if stream is not None else b""
        if _UNSAFE_ESCAPE.search(raw):
            raise exceptions.ParseError(
                "JSON parse error - text may not hold NUL characters or unpaired surrogates."
            )
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None

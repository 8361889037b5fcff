"""Validation of subject attributes, shared by the API, the admin and the services."""

from __future__ import annotations

import re

import pycountry
from django.utils import timezone

from consent.errors import InvalidValue

# Opaque account ids travel in URL paths: visible ASCII without '/', '?', '#' or '%'.
EXTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9._:@+=~-]{1,64}$")
# BCP 47 in the shape the platform sends: a language, then script/region/variant subtags.
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8}){0,3}$")
OLDEST_BIRTH_YEAR = 1900


def external_id(value: str) -> str:
    if not EXTERNAL_ID_RE.fullmatch(value):
        raise InvalidValue(
            "Must be 1 to 64 characters of letters, digits and . _ : @ + = ~ -.",
            field="external_id",
        )
    return value


def country(value: str) -> str:
    code = value.upper()
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise InvalidValue(f"'{value}' is not an ISO 3166-1 alpha-2 country code.", field="country")
    return code


def subdivision(value: str, *, country_code: str) -> str:
    if not value:
        return ""
    code = value.upper()
    if not code.startswith(f"{country_code}-"):
        raise InvalidValue(
            f"'{value}' is not a subdivision of {country_code}.", field="subdivision"
        )
    if pycountry.subdivisions.get(code=code) is None:
        raise InvalidValue(f"'{value}' is not an ISO 3166-2 code.", field="subdivision")
    return code


def language(value: str) -> str:
    if not LANGUAGE_RE.fullmatch(value):
        raise InvalidValue(f"'{value}' is not a BCP 47 language tag.", field="language")
    return value


def birth_year(value: int | None) -> int | None:
    if value is None:
        return None
    this_year = timezone.now().year
    if not OLDEST_BIRTH_YEAR <= value <= this_year:
        raise InvalidValue(
            f"Must be between {OLDEST_BIRTH_YEAR} and {this_year}.", field="birth_year"
        )
    return value

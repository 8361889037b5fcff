"""Admin validation for billing ops, on top of the database constraints."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from billing import ratecards
from billing.models import BillingAccount, MarketRate
from consent import validators
from consent.errors import InvalidValue


class MarketRateForm(forms.ModelForm):
    class Meta:
        model = MarketRate
        fields = [
            "name",
            "countries",
            "is_rest_of_world",
            "marketing",
            "utility",
            "authentication",
            "authentication_international",
            "notes",
        ]

    def clean_countries(self) -> str:
        codes = self.cleaned_data["countries"].upper().replace(",", " ").split()
        for code in codes:
            if not ratecards.valid_country(code):
                raise ValidationError(f"'{code}' is not an ISO 3166-1 alpha-2 country code.")
        if len(set(codes)) != len(codes):
            raise ValidationError("A country is listed twice.")
        return " ".join(codes)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for column in ratecards.RATE_COLUMNS:
            rate = data.get(column)
            if rate is not None and rate < 0:
                self.add_error(column, "A rate is zero or more (empty: not priced).")
        if data.get("is_rest_of_world") and data.get("countries"):
            self.add_error(
                "countries", "The rest-of-world market lists no countries: it holds the others."
            )
        elif not data.get("is_rest_of_world") and not data.get("countries") and "countries" in data:
            self.add_error("countries", "A market lists its countries.")
        return data


class MarketRateFormSet(forms.BaseInlineFormSet):
    """A card's markets: each country in one market, exactly one rest-of-world."""

    def clean(self) -> None:
        super().clean()
        markets: list[tuple[str, list[str]]] = []
        rest = 0
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data:
                continue
            if form.cleaned_data.get("DELETE"):
                continue
            rest += bool(form.cleaned_data.get("is_rest_of_world"))
            markets.append(
                (form.cleaned_data.get("name", "?"), form.cleaned_data.get("countries", "").split())
            )
        try:
            ratecards.check_countries(markets)
        except ratecards.RateCardError as error:
            raise ValidationError(str(error)) from None
        if rest != 1:
            raise ValidationError(
                "A rate card has exactly one rest-of-world market (for every country no "
                "other market lists)."
            )


class BillingAccountForm(forms.ModelForm):
    class Meta:
        model = BillingAccount
        fields = ["kind", "name", "country", "currency"]

    def clean_country(self) -> str:
        try:
            return validators.country(self.cleaned_data["country"])
        except InvalidValue as error:
            raise ValidationError(error.detail) from None

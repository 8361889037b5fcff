"""Admin forms of the ads app: campaigns, their targeting rules and advertisers.

The database refuses the worst mistakes too (`ads.models` constraints); these forms
say what is wrong in words a billing-ops person can act on.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from ads.choices import AGE_BANDS, FEATURE_TIES, Feature, Pricing
from ads.models import Ad, Advertiser, Campaign, TargetingRule
from consent import validators
from consent.errors import InvalidValue
from consent.models import MetadataCategory

MAX_RULE_VALUES = 100
MAX_VALUE_LENGTH = 64
CURRENCY_LENGTH = 3


def _check(validate: Any, value: str) -> str:
    """Runs a consent validator and turns its error into a form error."""
    try:
        result: str = validate(value)
    except InvalidValue as error:
        raise ValidationError(error.detail) from None
    return result


class AdvertiserForm(forms.ModelForm):
    class Meta:
        model = Advertiser
        fields = ["name", "country", "currency", "billing_account"]

    def clean_country(self) -> str:
        return _check(validators.country, self.cleaned_data["country"])

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        if len(currency) != CURRENCY_LENGTH or not currency.isalpha():
            raise ValidationError("Use an ISO 4217 currency code, e.g. USD.")
        return currency

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        account = data.get("billing_account")
        if account is not None and data.get("currency") and account.currency != data["currency"]:
            # Spend is reported in the advertiser's currency and invoiced in the account's.
            self.add_error(
                "billing_account",
                f"The billing account is invoiced in {account.currency}, the advertiser "
                f"spends in {data['currency']}: they must match.",
            )
        return data


class AdForm(forms.ModelForm):
    image_url = forms.URLField(
        max_length=500,
        required=False,
        assume_scheme="https",
        help_text="An https address of the image; leave empty for a text-only ad.",
    )

    class Meta:
        model = Ad
        fields = ["headline", "body", "image_url", "call_to_action", "is_active"]

    def clean_image_url(self) -> str:
        url: str = self.cleaned_data["image_url"]
        if url and not url.startswith("https://"):
            raise ValidationError("Images are served over https only.")
        return url


class CampaignForm(forms.ModelForm):
    class Meta:
        model = Campaign
        fields = [
            "advertiser",
            "name",
            "placement",
            "status",
            "starts_at",
            "ends_at",
            "pricing",
            "bid",
            "daily_budget",
            "total_budget",
            "frequency_cap",
            "click_to_chat",
        ]

    def clean_click_to_chat(self) -> str:
        business = self.cleaned_data["click_to_chat"].strip()
        if not business:
            return ""
        try:
            return validators.external_id(business)
        except InvalidValue:
            raise ValidationError(
                "Name the business account by its id: up to 64 letters, digits and . _ : @ + = ~ -."
            ) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        # Pricing is read-only once a campaign has spent (the admin leaves it out).
        pricing = data.get("pricing") if "pricing" in self.fields else self.instance.pricing
        business = data.get("click_to_chat")
        if pricing == Pricing.CPC and business == "":
            self.add_error(
                "pricing",
                "CPC pricing is only for click-to-chat ads: name the business the ad opens "
                "a chat with, or price the campaign per 1,000 impressions (CPM).",
            )
        if business and pricing == Pricing.CPM:
            self.add_error("click_to_chat", "Click-to-chat ads are priced per click (CPC).")
        daily, total = data.get("daily_budget"), data.get("total_budget")
        if daily is not None and total is not None and daily > total:
            self.add_error("daily_budget", "The daily budget cannot exceed the total budget.")
        if total is not None and self.instance.pk and total < self.instance.spent:
            self.add_error(
                "total_budget",
                f"The campaign has already spent {self.instance.spent}; the total budget "
                "cannot be lower.",
            )
        starts, ends = data.get("starts_at"), data.get("ends_at")
        if starts is not None and ends is not None and ends <= starts:
            self.add_error("ends_at", "The campaign must end after it starts.")
        return data


def clean_rule_values(feature: str, raw: str) -> list[str]:
    """Comma- or line-separated values → a non-empty list of short, distinct strings that can be
    values of `feature` (ISO countries, BCP 47 languages, the advertiser-facing age
    bands, advertiser ids for ad interactions)."""
    values: list[str] = []
    # One value per line, or comma-separated on one line (a city may contain a comma).
    parts = raw.splitlines() if "\n" in raw.strip() else raw.split(",")
    for part in parts:
        value = part.strip()
        if not value:
            continue
        if len(value) > MAX_VALUE_LENGTH:
            raise ValidationError(f"'{value[:20]}…' is longer than {MAX_VALUE_LENGTH} characters.")
        if feature == Feature.COUNTRY:
            value = _check(validators.country, value)
        elif feature == Feature.LANGUAGE:
            value = _check(validators.language, value)
        elif feature == Feature.AGE_BAND and value not in AGE_BANDS:
            raise ValidationError(f"'{value}' is not an age band; use {', '.join(AGE_BANDS)}.")
        elif feature == Feature.AD_INTERACTION and not value.isdigit():
            raise ValidationError(
                f"'{value}' is not an advertiser id: ad-interaction rules match people "
                "who clicked ads of these advertisers."
            )
        if value not in values:
            values.append(value)
    if not values:
        raise ValidationError("Give at least one value (separated by commas or lines).")
    if len(values) > MAX_RULE_VALUES:
        raise ValidationError(f"At most {MAX_RULE_VALUES} values per rule.")
    return values


class TargetingRuleForm(forms.ModelForm):
    """A rule names a feature and its values; its metadata category follows from the
    feature (`ads.choices.FEATURE_TIES`) and must exist as a `MetadataCategory`."""

    values = forms.CharField(
        max_length=(MAX_VALUE_LENGTH + 2) * MAX_RULE_VALUES,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 40}),
        help_text="Comma-separated (e.g. US, BR or 18-24, 25-34), or one per line.",
    )

    class Meta:
        model = TargetingRule
        fields = ["feature", "values"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None:
            self.initial["values"] = ", ".join(self.instance.values)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        feature = data.get("feature")
        if not feature:
            return data
        category_key, purpose = FEATURE_TIES[feature]
        category = MetadataCategory.objects.filter(key=category_key).first()
        if category is None:
            self.add_error(
                "feature",
                f"Targeting on {feature} needs the metadata category '{category_key}' (used "
                f"under the purpose '{purpose}'), which does not exist. Policy staff must "
                "create it before campaigns can target this feature.",
            )
        else:
            self.instance.category = category
        raw = data.get("values")
        if raw is not None:
            try:
                data["values"] = clean_rule_values(feature, raw)
            except ValidationError as error:
                self.add_error("values", error)
        return data

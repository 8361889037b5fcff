"""Forms of the staff admin, with the validation that keeps the rules coherent.

The invariants between purposes and jurisdiction rules:
- `always_on` is the mechanism of essential purposes only;
- an essential purpose is `always_on` in every jurisdiction that has a rule for it.
Both are checked on each rule, against the purpose as it is being saved: on the
jurisdiction page against the purpose chosen in the row, on the purpose page against
the purpose's new flags (so a purpose can become essential and have its rules set to
`always_on` in the same save).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pycountry
from django import forms
from django.core.exceptions import ValidationError
from django.forms.models import BaseInlineFormSet
from django.utils.translation import gettext_lazy as _

from consent.choices import JurisdictionKind, Mechanism, Region, RolloutStatus
from consent.dashboard import purpose_description, purpose_name
from consent.models import Jurisdiction, JurisdictionRule, PolicyVersion, Purpose, RolloutPhase

MAX_REASON_LENGTH = 2000


class PolicyVersionForm(forms.ModelForm):
    """Labels are `YYYY-MM` (the model's validator) and, because consent checks compare
    labels, a label that subjects or jurisdictions already use cannot change."""

    class Meta:
        model = PolicyVersion
        fields = [
            "label",
            "title",
            "body",
            "summary_of_changes",
            "material",
            "changed_purposes",
            "published_at",
            "created_at",
        ]

    def clean_label(self) -> str:
        label: str = self.cleaned_data["label"]
        instance = self.instance
        if instance.pk and label != instance.label:
            in_use = instance.published_at is not None or instance.live_jurisdictions.exists()
            if in_use:
                raise ValidationError(
                    "This version is published; its label orders it against the other "
                    "versions and cannot change.",
                    code="label_in_use",
                )
        return label

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        label = cleaned.get("label")
        changed = cleaned.get("changed_purposes")
        if label and changed is not None:
            later = sorted(
                p.key
                for p in changed.select_related("introduced_in")
                if p.introduced_in.label >= label
            )
            if later:
                self.add_error(
                    "changed_purposes",
                    ValidationError(
                        "A version can only change purposes introduced before it: %(keys)s "
                        "did not exist yet.",
                        code="purpose_not_yet_introduced",
                        params={"keys": ", ".join(later)},
                    ),
                )
        return cleaned


class PurposeForm(forms.ModelForm):
    class Meta:
        model = Purpose
        fields = [
            "key",
            "name",
            "description",
            "categories",
            "introduced_in",
            "essential",
            "gpc_applies",
            "profiling",
            "display_order",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if cleaned.get("essential"):
            for flag in ("gpc_applies", "profiling"):
                if cleaned.get(flag):
                    self.add_error(
                        flag,
                        ValidationError(
                            "An essential purpose is always on: it cannot also be %(what)s.",
                            code="essential_conflict",
                            params={
                                "what": "opted out of by Global Privacy Control"
                                if flag == "gpc_applies"
                                else "profiling (blocked for minors)"
                            },
                        ),
                    )
        return cleaned


def rule_mechanism_errors(*, purpose: Purpose, mechanism: str) -> str | None:
    """Why `mechanism` is not allowed for `purpose`, or None."""
    if mechanism == Mechanism.ALWAYS_ON and not purpose.essential:
        return (
            f"'Always on' is only for essential purposes; '{purpose.key}' is not essential. "
            "Use opt-in or opt-out."
        )
    if purpose.essential and mechanism != Mechanism.ALWAYS_ON:
        return f"'{purpose.key}' is essential: it must be 'Always on' in every jurisdiction."
    return None


class JurisdictionRuleForm(forms.ModelForm):
    class Meta:
        model = JurisdictionRule
        fields = ["jurisdiction", "purpose", "mechanism", "notes"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        mechanism = cleaned.get("mechanism")
        # In an inline the parent is not a field of the form but set on the instance.
        purpose = cleaned.get("purpose") if "purpose" in self.fields else self.instance.purpose
        if purpose is not None and mechanism:
            problem = rule_mechanism_errors(purpose=purpose, mechanism=mechanism)
            if problem:
                self.add_error("mechanism", ValidationError(problem, code="mechanism"))
        return cleaned


class JurisdictionForm(forms.ModelForm):
    class Meta:
        model = Jurisdiction
        fields = [
            "code",
            "name",
            "kind",
            "region",
            "law",
            "consent_age",
            "opt_in_below_age",
            "minor_age",
            "profiling_ads_to_minors_banned",
            "gpc_required",
            "material_change_requires_decision",
            "request_deadline_days",
            "request_deadline_extension_days",
            "notes",
            "current_policy_version",
        ]

    def clean_code(self) -> str:
        return str(self.cleaned_data["code"]).strip().upper()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        consent_age, minor_age = cleaned.get("consent_age"), cleaned.get("minor_age")
        if consent_age is not None and minor_age is not None and consent_age > minor_age:
            self.add_error(
                "consent_age",
                ValidationError(
                    "The age of consent (%(consent)s) cannot be above the age of majority "
                    "(%(minor)s).",
                    code="consent_age_above_majority",
                    params={"consent": consent_age, "minor": minor_age},
                ),
            )
        opt_in_below = cleaned.get("opt_in_below_age")
        if opt_in_below is not None and minor_age is not None and opt_in_below > minor_age:
            self.add_error(
                "opt_in_below_age",
                ValidationError(
                    "Opt-in below %(age)s reaches adults: it cannot be above the age of "
                    "majority (%(minor)s).",
                    code="opt_in_age_above_majority",
                    params={"age": opt_in_below, "minor": minor_age},
                ),
            )
        code, kind = cleaned.get("code"), cleaned.get("kind")
        if code and kind:
            problem = _code_problem(code, kind)
            if problem:
                self.add_error("code", ValidationError(problem, code="code"))
        return cleaned


def _code_problem(code: str, kind: str) -> str | None:
    if kind == JurisdictionKind.DEFAULT:
        ok = code == Jurisdiction.DEFAULT_CODE
        return None if ok else f"The default rule set has the code {Jurisdiction.DEFAULT_CODE}."
    if kind == JurisdictionKind.COUNTRY:
        ok = len(code) == 2 and pycountry.countries.get(alpha_2=code) is not None
        return None if ok else f"'{code}' is not an ISO 3166-1 alpha-2 country code."
    ok = "-" in code and pycountry.subdivisions.get(code=code) is not None
    return None if ok else f"'{code}' is not an ISO 3166-2 subdivision code (e.g. US-CA)."


def phase_has_started(phase: RolloutPhase) -> bool:
    return phase.pk is not None and (
        phase.started_at is not None or phase.status != RolloutStatus.SCHEDULED
    )


class RolloutPhaseForm(forms.ModelForm):
    """A phase that has started (or ended) is history: its row is shown, not edited."""

    class Meta:
        model = RolloutPhase
        fields = ["position", "starts_at", "jurisdictions"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if phase_has_started(self.instance):
            for form_field in self.fields.values():
                form_field.disabled = True


class RolloutPhaseFormSet(BaseInlineFormSet):
    """Phases start in the order of their positions, and a jurisdiction belongs to
    at most one phase of a rollout."""

    def clean(self) -> None:
        super().clean()
        kept = []
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or not form.cleaned_data:
                continue
            if self.can_delete and form.cleaned_data.get("DELETE"):
                if phase_has_started(form.instance):
                    raise ValidationError(
                        "Phase %(position)s has started: it cannot be deleted.",
                        code="phase_started",
                        params={"position": form.instance.position},
                    )
                continue
            kept.append(form.cleaned_data)
        kept = [d for d in kept if d.get("position") is not None and d.get("starts_at")]
        kept.sort(key=lambda d: d["position"])
        for earlier, later in pairwise(kept):
            if later["starts_at"] < earlier["starts_at"]:
                raise ValidationError(
                    "Phase %(later)s starts before phase %(earlier)s: order the phases by "
                    "their start times.",
                    code="phase_order",
                    params={"later": later["position"], "earlier": earlier["position"]},
                )
        seen: dict[str, int] = {}
        for data in kept:
            for jurisdiction in data.get("jurisdictions") or []:
                if jurisdiction.code in seen:
                    raise ValidationError(
                        "%(code)s is in phases %(first)s and %(second)s; a jurisdiction is "
                        "reached by one phase only.",
                        code="jurisdiction_twice",
                        params={
                            "code": jurisdiction.code,
                            "first": seen[jurisdiction.code],
                            "second": data["position"],
                        },
                    )
                seen[jurisdiction.code] = data["position"]


class StaffChangeForm(forms.Form):
    """A consent change support records on a person's documented request."""

    purpose = forms.ModelChoiceField(
        queryset=Purpose.objects.filter(essential=False),
        to_field_name="key",
        empty_label=None,
        help_text="Essential purposes are always on and cannot be changed.",
    )
    decision = forms.TypedChoiceField(
        choices=[("grant", "Grant"), ("refuse", "Refuse")],
        coerce=lambda value: value == "grant",
        widget=forms.RadioSelect,
    )
    reason = forms.CharField(
        max_length=MAX_REASON_LENGTH,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="Required. The person's request and how it reached support "
        "(e.g. ticket number). Stored with the consent event.",
    )


class StatisticsFilterForm(forms.Form):
    """Optional filters of the consent statistics (GET)."""

    region = forms.ChoiceField(choices=[("", "All regions"), *Region.choices], required=False)
    purpose = forms.ModelChoiceField(
        queryset=Purpose.objects.all(),
        to_field_name="key",
        required=False,
        empty_label="All purposes",
    )


# --- the privacy dashboard -----------------------------------------------------------------


class SignInForm(forms.Form):
    """The demo password sign-in (subjects created by `seed_demo`)."""

    username = forms.CharField(label=_("Account id"), max_length=150)
    password = forms.CharField(
        label=_("Password"), max_length=128, strip=False, widget=forms.PasswordInput
    )


def _yes(value: str) -> bool:
    return value == "true"


ON_OFF = [("true", _("On")), ("false", _("Off"))]


class ChoiceForm(forms.Form):
    """Turns one purpose on or off."""

    granted = forms.TypedChoiceField(choices=ON_OFF, coerce=_yes)


class NoticeForm(forms.Form):
    """The decisions a policy notice asks for: one required yes/no per purpose, nothing
    preselected, both answers equal."""

    def __init__(self, *args: Any, purposes: list[Purpose], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.purposes = purposes
        for purpose in purposes:
            self.fields[f"purpose_{purpose.key}"] = forms.TypedChoiceField(
                label=purpose_name(purpose),
                help_text=purpose_description(purpose),
                choices=[("true", _("Allow")), ("false", _("Don't allow"))],
                coerce=_yes,
                widget=forms.RadioSelect,
                error_messages={"required": _("Choose “Allow” or “Don't allow”.")},
            )

    def decisions(self) -> dict[str, bool]:
        return {p.key: self.cleaned_data[f"purpose_{p.key}"] for p in self.purposes}

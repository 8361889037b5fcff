"""The consent and reference endpoints of the REST API (`/api/v1/`).

Views validate input and shape output; every change is made by `consent.services`.
"""

from __future__ import annotations

import functools
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consent import errors, fastlane, selectors, services
from consent.auth import ServicePrincipal
from consent.choices import ActorType, DenialReason, Mechanism, Scope, Source
from consent.models import ConsentEvent, Jurisdiction, JurisdictionRule, PolicyVersion, Purpose
from consent.problems import PROBLEM_CONTENT_TYPE, CursorPage, StrictSerializer

READ, WRITE = Scope.CONSENT_READ.value, Scope.CONSENT_WRITE.value
POLICY_READ = Scope.POLICY_READ.value


class ProblemSerializer(serializers.Serializer):
    type = serializers.CharField()
    title = serializers.CharField()
    status = serializers.IntegerField()
    detail = serializers.CharField()
    instance = serializers.CharField()
    errors = serializers.ListField(  # type: ignore[assignment]  # schema only
        child=serializers.DictField(child=serializers.CharField(allow_null=True)),
        required=False,
    )


def problems(*codes: int) -> dict[Any, Any]:
    """Schema entries for the problem+json responses an operation can give."""
    described = {
        400: "Invalid request body or parameters",
        401: "Missing, invalid or revoked token",
        403: "The token lacks the scope",
        404: "No such resource",
        409: "Conflicts with the current state",
        422: "Idempotency-Key reused with a different request",
    }
    return {
        (code, PROBLEM_CONTENT_TYPE): OpenApiResponse(ProblemSerializer, described[code])
        for code in (401, 403, *codes)
    }


def principal_of(request: Request) -> ServicePrincipal:
    principal = request.user
    if not isinstance(principal, ServicePrincipal):  # HasScope has already refused this
        raise NotAuthenticated()
    return principal


def actor_of(request: Request) -> services.Actor:
    return services.Actor(ActorType.SERVICE, principal_of(request).actor_id)


# --- serializers ------------------------------------------------------------------------


class ConsentOut(serializers.Serializer):
    purpose = serializers.CharField(source="purpose.key")
    granted = serializers.BooleanField()
    allowed = serializers.BooleanField()
    reason = serializers.ChoiceField(choices=DenialReason.choices, allow_null=True)
    source = serializers.ChoiceField(choices=Source.choices)  # type: ignore[assignment]
    explicit = serializers.BooleanField()
    locked = serializers.CharField(allow_null=True)
    policy_version = serializers.CharField()
    updated_at = serializers.DateTimeField()


class NoticeOut(serializers.Serializer):
    version = serializers.CharField(source="version.label")
    title = serializers.CharField(source="version.title")
    summary_of_changes = serializers.CharField(source="version.summary_of_changes")
    material = serializers.BooleanField(source="version.material")
    requires_decision = serializers.BooleanField()
    decision_purposes = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_decision_purposes(self, notice: Any) -> list[str]:
        return [p.key for p in notice.decision_purposes.all()]


class SubjectOut(serializers.Serializer):
    external_id = serializers.CharField()
    country = serializers.CharField()
    subdivision = serializers.CharField()
    language = serializers.CharField()
    birth_year = serializers.IntegerField(allow_null=True)
    jurisdiction = serializers.CharField(source="jurisdiction.code")
    policy_version = serializers.CharField(source="policy_version.label")
    gpc_signalled_at = serializers.DateTimeField(allow_null=True)
    pending_notice = serializers.SerializerMethodField()
    consents = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(NoticeOut(allow_null=True))
    def get_pending_notice(self, subject: Any) -> dict[str, Any] | None:
        notice = selectors.pending_notice(subject=subject)
        return NoticeOut(notice).data if notice else None

    @extend_schema_field(ConsentOut(many=True))
    def get_consents(self, subject: Any) -> Any:
        return ConsentOut(selectors.subject_consents(subject=subject), many=True).data


class SubjectIn(StrictSerializer):
    external_id = serializers.CharField(max_length=64)
    country = serializers.CharField(max_length=2)
    subdivision = serializers.CharField(max_length=6, required=False, allow_blank=True, default="")
    language = serializers.CharField(max_length=35, required=False, default="en")
    birth_year = serializers.IntegerField(required=False, allow_null=True, default=None)


class SubjectPatchIn(StrictSerializer):
    external_id = serializers.CharField(required=False, help_text="Cannot be changed.")
    country = serializers.CharField(max_length=2, required=False)
    subdivision = serializers.CharField(max_length=6, required=False, allow_blank=True)
    language = serializers.CharField(max_length=35, required=False)
    birth_year = serializers.IntegerField(
        required=False, allow_null=True, help_text="null removes the birth year."
    )

    def validate_external_id(self, value: str) -> str:
        raise serializers.ValidationError("The external id of a subject cannot be changed.")


class ProofIn(StrictSerializer):
    notice_version = serializers.CharField(
        max_length=16, required=False, help_text="The policy version shown to the person."
    )
    language = serializers.CharField(max_length=35, required=False)
    ip = serializers.IPAddressField(
        required=False, help_text="The person's IP address; only its network is kept."
    )
    user_agent = serializers.CharField(max_length=512, required=False)

    def validate_notice_version(self, value: str) -> PolicyVersion:
        version = PolicyVersion.objects.filter(label=value).first()
        if version is None:
            raise serializers.ValidationError(f"No policy version '{value}'.")
        return version


class ConsentChoiceIn(StrictSerializer):
    granted = serializers.BooleanField()
    gpc = serializers.BooleanField(
        required=False,
        default=False,
        help_text="The person's device sends Global Privacy Control; it is applied "
        "(once) before this choice.",
    )
    proof = ProofIn(required=False, help_text="Context that proves the decision.")


class CheckIn(StrictSerializer):
    purpose = serializers.SlugField(max_length=64)
    subjects = serializers.ListField(
        child=serializers.CharField(max_length=64),
        min_length=1,
        max_length=selectors.MAX_BULK_CHECK,
    )


class CheckResultOut(serializers.Serializer):
    subject = serializers.CharField()
    allowed = serializers.BooleanField()
    reason = serializers.ChoiceField(choices=DenialReason.choices, allow_null=True)


class CheckOut(serializers.Serializer):
    purpose = serializers.CharField()
    results = CheckResultOut(many=True)


class EventOut(serializers.ModelSerializer):
    purpose = serializers.CharField(source="purpose.key")
    policy_version = serializers.CharField(source="policy_version.label")
    jurisdiction = serializers.CharField(source="jurisdiction.code")
    notice_version = serializers.SerializerMethodField()

    class Meta:
        model = ConsentEvent
        fields = [
            "id",
            "purpose",
            "granted",
            "source",
            "policy_version",
            "jurisdiction",
            "actor_type",
            "actor_id",
            "occurred_at",
            "notice_version",
            "language",
            "ip_truncated",
            "user_agent",
            "reason",
        ]

    def get_notice_version(self, event: ConsentEvent) -> str | None:
        return event.notice_version.label if event.notice_version else None


class DashboardLinkOut(serializers.Serializer):
    url = serializers.URLField()
    expires_at = serializers.DateTimeField()


class CategoryOut(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()


class PurposeOut(serializers.ModelSerializer):
    categories = CategoryOut(many=True)
    introduced_in = serializers.CharField(source="introduced_in.label")

    class Meta:
        model = Purpose
        fields = [
            "key",
            "name",
            "description",
            "categories",
            "essential",
            "gpc_applies",
            "profiling",
            "introduced_in",
        ]


class RuleOut(serializers.Serializer):
    purpose = serializers.CharField(source="purpose.key")
    mechanism = serializers.ChoiceField(choices=Mechanism.choices)
    notes = serializers.CharField()


class JurisdictionOut(serializers.ModelSerializer):
    current_policy_version = serializers.CharField(source="current_policy_version.label")
    rules = RuleOut(many=True)

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
            "current_policy_version",
            "notes",
            "rules",
        ]


# --- views -------------------------------------------------------------------------------


def subject_response(external_id: str, status: int = 200) -> Response:
    subject = selectors.get_subject(external_id=external_id)
    return Response(SubjectOut(subject).data, status=status)


class SubjectsView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="subjects_create",
        request=SubjectIn,
        responses={201: SubjectOut, **problems(400, 409)},
        summary="Register a subject",
    )
    def post(self, request: Request) -> Response:
        data = SubjectIn(data=request.data)
        data.is_valid(raise_exception=True)
        subject = services.register_subject(**data.validated_data, actor=actor_of(request))
        return subject_response(subject.external_id, status=201)


class SubjectView(APIView):
    required_scopes = {"GET": READ, "PATCH": WRITE, "DELETE": WRITE}

    @extend_schema(
        operation_id="subjects_retrieve",
        responses={200: SubjectOut, **problems(404)},
        summary="A subject with jurisdiction, policy version, pending notice and consents",
    )
    def get(self, request: Request, external_id: str) -> Response:
        return subject_response(external_id)

    @extend_schema(
        operation_id="subjects_update",
        request=SubjectPatchIn,
        responses={200: SubjectOut, **problems(400, 404)},
        summary="Change country, subdivision, language or birth year (re-evaluates consents)",
    )
    def patch(self, request: Request, external_id: str) -> Response:
        data = SubjectPatchIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        clear_birth_year = "birth_year" in values and values["birth_year"] is None
        services.update_subject(
            external_id=external_id,
            actor=actor_of(request),
            clear_birth_year=clear_birth_year,
            **values,
        )
        return subject_response(external_id)

    @extend_schema(
        operation_id="subjects_erase",
        responses={204: None, **problems(404)},
        summary="Erase a subject (consents withdrawn, identity removed)",
    )
    def delete(self, request: Request, external_id: str) -> Response:
        services.erase_subject(external_id=external_id, actor=actor_of(request))
        return Response(status=204)


class ConsentsView(APIView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="consents_list",
        responses={200: ConsentOut(many=True), **problems(404)},
        summary="Current state per purpose",
    )
    def get(self, request: Request, external_id: str) -> Response:
        subject = selectors.get_subject(external_id=external_id)
        return Response(ConsentOut(selectors.subject_consents(subject=subject), many=True).data)


IDEMPOTENCY_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="Repeat a request safely: the same key and body replay the first response "
    "(for 24 hours); the same key with another body is refused with 422.",
)


class ConsentView(APIView):
    required_scopes = {"PUT": WRITE}

    @extend_schema(
        operation_id="consents_put",
        request=ConsentChoiceIn,
        parameters=[IDEMPOTENCY_HEADER],
        responses={200: ConsentOut, **problems(400, 404, 409, 422)},
        summary="Record the subject's choice for one purpose (source user_app)",
    )
    def put(self, request: Request, external_id: str, purpose: str) -> Response:
        data = ConsentChoiceIn(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        given = values.get("proof", {})
        proof = services.Proof(
            notice_version=given.get("notice_version"),
            language=given.get("language", ""),
            ip_truncated=services.truncate_ip(given.get("ip")),
            user_agent=given.get("user_agent", ""),
        )
        actor = actor_of(request)

        def action() -> tuple[int, Any]:
            services.record_choice(
                external_id=external_id,
                purpose_key=purpose,
                granted=values["granted"],
                gpc=values["gpc"],
                source=Source.USER_APP,
                actor=actor,
                proof=proof,
            )
            subject = selectors.get_subject(external_id=external_id)
            view = next(
                v for v in selectors.subject_consents(subject=subject) if v.purpose.key == purpose
            )
            return 200, ConsentOut(view).data

        key = request.headers.get("Idempotency-Key")
        if key is None:
            status, body = action()
            replayed = False
        else:
            status, body, replayed = services.run_idempotently(
                account=principal_of(request).token.account,
                key=key,
                fingerprint=services.request_fingerprint(
                    method="PUT", path=request.path, body=request.data
                ),
                action=action,
            )
        response = Response(body, status=status)
        if replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class EventsView(generics.ListAPIView):
    required_scopes = {"GET": READ}
    serializer_class = EventOut
    pagination_class = CursorPage

    def get_queryset(self) -> QuerySet[ConsentEvent]:
        subject = selectors.get_subject(external_id=self.kwargs["external_id"])
        return selectors.subject_events(subject=subject)

    @extend_schema(
        operation_id="events_list",
        summary="The subject's consent events, newest first",
        responses={200: EventOut(many=True), **problems(400, 404)},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class ReceiptView(APIView):
    required_scopes = {"GET": READ}

    @extend_schema(
        operation_id="events_receipt",
        summary="A consent receipt (Kantara Consent Receipt v1.1 fields) for one event",
        responses={200: OpenApiResponse(dict, "The receipt"), **problems(404)},
    )
    def get(self, request: Request, external_id: str, event_id: int) -> Response:
        subject = selectors.get_subject(external_id=external_id)
        event = selectors.get_event(subject=subject, event_id=event_id)
        return Response(selectors.consent_receipt(event=event))


class NoticeAcknowledgeView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="notice_acknowledge",
        request=None,
        summary="The subject read the pending policy notice (and made any decisions it asks)",
        responses={200: SubjectOut, **problems(404, 409)},
    )
    def post(self, request: Request, external_id: str) -> Response:
        services.resolve_notice(external_id=external_id, actor=actor_of(request))
        return subject_response(external_id)


class ConsentChecksView(APIView):
    required_scopes = {"POST": READ}

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        """The DRF view behind the fast lane (`consent/fastlane.py`): a plainly valid
        check is answered there; everything else, errors included, here."""
        drf_view = super().as_view(**initkwargs)

        def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            fast = fastlane.answer_once(fastlane.consent_check, request)
            return fast if fast is not None else drf_view(request, *args, **kwargs)

        # The schema generator and Django's CSRF exemption read these attributes.
        functools.update_wrapper(view, drf_view)
        return view

    @extend_schema(
        operation_id="consent_checks",
        request=CheckIn,
        responses={200: CheckOut, **problems(400, 404)},
        summary="Is the purpose allowed for these subjects? (up to 1,000; one query)",
    )
    def post(self, request: Request) -> Response:
        data = CheckIn(data=request.data)
        data.is_valid(raise_exception=True)
        purpose_key = data.validated_data["purpose"]
        results = selectors.check_consent_by_key(
            purpose_key=purpose_key, external_ids=data.validated_data["subjects"]
        )
        return Response(
            {
                "purpose": purpose_key,
                "results": [
                    {"subject": r.subject, "allowed": r.allowed, "reason": r.reason}
                    for r in results
                ],
            }
        )


class DashboardLinksView(APIView):
    required_scopes = {"POST": WRITE}

    @extend_schema(
        operation_id="dashboard_links_create",
        request=None,
        responses={201: DashboardLinkOut, **problems(404)},
        summary="A single-use sign-in link to the privacy dashboard",
    )
    def post(self, request: Request, external_id: str) -> Response:
        url, expires_at = services.issue_dashboard_link(
            external_id=external_id, issued_by=principal_of(request).token.account
        )
        return Response(DashboardLinkOut({"url": url, "expires_at": expires_at}).data, status=201)


class PurposesView(generics.ListAPIView):
    required_scopes = {"GET": POLICY_READ}
    serializer_class = PurposeOut
    pagination_class = None
    queryset = Purpose.objects.select_related("introduced_in").prefetch_related("categories")

    @extend_schema(
        operation_id="purposes_list", responses={200: PurposeOut(many=True), **problems()}
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class JurisdictionView(APIView):
    required_scopes = {"GET": POLICY_READ}

    @extend_schema(
        operation_id="jurisdictions_retrieve",
        responses={200: JurisdictionOut, **problems(404)},
        summary="A jurisdiction's rules (ISO 3166-1/3166-2 code, or DEFAULT)",
    )
    def get(self, request: Request, code: str) -> Response:
        jurisdiction = (
            Jurisdiction.objects.select_related("current_policy_version")
            .prefetch_related(Prefetch("rules", JurisdictionRule.objects.select_related("purpose")))
            .filter(code=code.upper())
            .first()
        )
        if jurisdiction is None:
            raise errors.NotFound(f"No jurisdiction '{code}'.")
        return Response(JurisdictionOut(jurisdiction).data)

"""`POST /api/v1/signals`: metadata events from the platform's services.

The view validates (content refused first, then each event against its type's schema)
and hands the events to `ads.signals.ingest`, which decides what is stored.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ads import signals
from consent.api import problems
from consent.choices import Scope
from consent.problems import StrictSerializer

SIGNALS_WRITE = Scope.SIGNALS_WRITE.value
_Schema = serializers.Serializer[Any] | type[serializers.Serializer[Any]]
EVENT_SCHEMAS: dict[str, _Schema] = dict(signals.EVENT_SCHEMAS)


@extend_schema_field(
    PolymorphicProxySerializer(
        component_name="SignalEvent",
        serializers=EVENT_SCHEMAS,
        resource_type_field_name="type",
        many=False,
    )
)
class SignalEventField(serializers.JSONField):
    """One event, checked against its type's schema by `SignalsIn.validate`, which
    names errors by their position in the batch (`events[3]`, even for a null)."""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        return data


class SignalsIn(StrictSerializer):
    events = serializers.ListField(
        child=SignalEventField(),
        min_length=1,
        max_length=signals.MAX_EVENTS,
        help_text="1 to 1,000 events. One event that is refused refuses the batch.",
    )

    def to_internal_value(self, data: Any) -> Any:
        # Before "unknown field": a content key is refused as content, wherever it is.
        signals.refuse_content(data)
        return super().to_internal_value(data)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        return {"events": signals.validate_events(attrs["events"])}


class SignalsOut(serializers.Serializer):
    accepted = serializers.IntegerField(help_text="Events stored.")
    dropped = serializers.IntegerField(
        help_text="Events not stored: unknown or erased subject, or the purpose the signal "
        "feeds is not allowed."
    )


class SignalsView(APIView):
    required_scopes = {"POST": SIGNALS_WRITE}

    @extend_schema(
        operation_id="signals_ingest",
        request=SignalsIn,
        responses={200: SignalsOut, **problems(400)},
        summary="Report 1 to 1,000 metadata events; those without consent are dropped",
        description="Each event has `type`, `subject`, `occurred_at` and exactly the fields "
        "of its type. Any content-like key (message text, media, calls, contacts, group "
        "membership, locations), unknown type or field, or wrong value refuses the whole "
        "batch with a 400 naming each path, e.g. `events[3].text`. An event whose subject "
        "has not allowed the purpose it feeds is dropped and counted, never stored.",
    )
    def post(self, request: Request) -> Response:
        data = SignalsIn(data=request.data)
        data.is_valid(raise_exception=True)
        result = signals.ingest(events=data.validated_data["events"])
        return Response(SignalsOut(result).data)

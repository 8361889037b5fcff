"""Rollouts over the API: progress for dashboards, controls for the policy tool."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from consent import rollouts
from consent.api import actor_of, problems
from consent.choices import RolloutStatus, Scope
from consent.errors import NotFound
from consent.models import Jurisdiction, Rollout, RolloutPhase

POLICY_READ, POLICY_WRITE = Scope.POLICY_READ.value, Scope.POLICY_WRITE.value


class PhaseOut(serializers.ModelSerializer):
    status = serializers.ChoiceField(choices=RolloutStatus.choices)
    jurisdictions: Any = serializers.SlugRelatedField(slug_field="code", many=True, read_only=True)

    class Meta:
        model = RolloutPhase
        fields = [
            "position",
            "starts_at",
            "status",
            "started_at",
            "completed_at",
            "jurisdictions",
            "total",
            "processed",
            "failed",
        ]


class RolloutOut(serializers.ModelSerializer):
    version = serializers.CharField(source="version.label")
    status = serializers.ChoiceField(choices=RolloutStatus.choices)
    phases = PhaseOut(many=True)

    class Meta:
        model = Rollout
        fields = ["id", "name", "version", "status", "created_at", "dry_run_at", "phases"]


class DryRunJurisdictionOut(serializers.Serializer):
    code = serializers.CharField()
    subjects = serializers.IntegerField()


class DryRunPhaseOut(serializers.Serializer):
    position = serializers.IntegerField()
    status = serializers.CharField()
    jurisdictions = DryRunJurisdictionOut(many=True)
    subjects = serializers.IntegerField()


class DryRunChangeOut(serializers.Serializer):
    purpose = serializers.CharField()
    granted = serializers.IntegerField()
    refused = serializers.IntegerField()
    kept = serializers.IntegerField()


class DryRunOut(serializers.Serializer):
    computed_at = serializers.DateTimeField()
    phases = DryRunPhaseOut(many=True)
    changes = DryRunChangeOut(many=True)


def rollout_queryset() -> QuerySet[Rollout]:
    return Rollout.objects.select_related("version").prefetch_related(
        Prefetch(
            "phases",
            RolloutPhase.objects.order_by("position").prefetch_related(
                Prefetch("jurisdictions", Jurisdiction.objects.order_by("code"))
            ),
        )
    )


def get_rollout(rollout_id: int) -> Rollout:
    rollout = rollout_queryset().filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound(f"No rollout {rollout_id}.")
    return rollout


class RolloutsView(generics.ListAPIView):
    required_scopes = {"GET": POLICY_READ}
    serializer_class = RolloutOut
    pagination_class = None

    def get_queryset(self) -> QuerySet[Rollout]:
        return rollout_queryset().order_by("version__label", "pk")

    @extend_schema(
        operation_id="rollouts_list",
        summary="Rollouts with per-phase progress",
        responses={200: RolloutOut(many=True), **problems()},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)


class RolloutView(APIView):
    required_scopes = {"GET": POLICY_READ}

    @extend_schema(
        operation_id="rollouts_retrieve",
        summary="One rollout: per-phase total, processed, failed and status",
        responses={200: RolloutOut, **problems(404)},
    )
    def get(self, request: Request, rollout_id: int) -> Response:
        return Response(RolloutOut(get_rollout(rollout_id)).data)


class RolloutDryRunView(APIView):
    required_scopes = {"POST": POLICY_READ}

    @extend_schema(
        operation_id="rollouts_dry_run",
        request=None,
        summary="Counts of subjects per jurisdiction and of the changes, changing nothing",
        responses={200: DryRunOut, **problems(404)},
    )
    def post(self, request: Request, rollout_id: int) -> Response:
        result = rollouts.dry_run(rollout=get_rollout(rollout_id), actor=actor_of(request).id)
        return Response(DryRunOut(result).data)


class RolloutControlView(APIView):
    """start (the next phase, now) · pause · resume · cancel."""

    required_scopes = {"POST": POLICY_WRITE}
    action = ""

    @extend_schema(
        request=None,
        responses={200: RolloutOut, **problems(404, 409)},
    )
    def post(self, request: Request, rollout_id: int) -> Response:
        rollout = get_rollout(rollout_id)
        actor = actor_of(request).id
        if self.action == "start":
            rollouts.start_now(rollout=rollout, actor=actor)
        else:
            getattr(rollouts, self.action)(rollout=rollout, actor=actor)
        return Response(RolloutOut(get_rollout(rollout_id)).data)


def control(action: str, summary: str) -> Any:
    """The view for one control action, with its own operation in the schema."""
    view: type[RolloutControlView] = type(
        f"Rollout{action.title()}View", (RolloutControlView,), {"action": action}
    )
    schema = extend_schema_view(
        post=extend_schema(operation_id=f"rollouts_{action}", summary=summary)
    )
    return schema(view).as_view()

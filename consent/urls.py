from django.urls import path

from consent import api, rollout_api, webhook_api

SUBJECT = "subjects/<str:external_id>"

urlpatterns = [
    path("subjects", api.SubjectsView.as_view(), name="subjects"),
    path(SUBJECT, api.SubjectView.as_view(), name="subject"),
    path(f"{SUBJECT}/consents", api.ConsentsView.as_view(), name="consents"),
    path(f"{SUBJECT}/consents/<str:purpose>", api.ConsentView.as_view(), name="consent"),
    path(f"{SUBJECT}/events", api.EventsView.as_view(), name="events"),
    path(f"{SUBJECT}/events/<int:event_id>/receipt", api.ReceiptView.as_view(), name="receipt"),
    path(
        f"{SUBJECT}/notice/acknowledge",
        api.NoticeAcknowledgeView.as_view(),
        name="notice-acknowledge",
    ),
    path(f"{SUBJECT}/dashboard-links", api.DashboardLinksView.as_view(), name="dashboard-links"),
    path("consent-checks", api.ConsentChecksView.as_view(), name="consent-checks"),
    path("purposes", api.PurposesView.as_view(), name="purposes"),
    path("jurisdictions/<str:code>", api.JurisdictionView.as_view(), name="jurisdiction"),
    path("rollouts", rollout_api.RolloutsView.as_view(), name="rollouts"),
    path("rollouts/<int:rollout_id>", rollout_api.RolloutView.as_view(), name="rollout"),
    path(
        "rollouts/<int:rollout_id>/dry-run",
        rollout_api.RolloutDryRunView.as_view(),
        name="rollout-dry-run",
    ),
    path(
        "rollouts/<int:rollout_id>/start",
        rollout_api.control("start", "Start the next phase now"),
        name="rollout-start",
    ),
    path(
        "rollouts/<int:rollout_id>/pause",
        rollout_api.control("pause", "Pause the rollout"),
        name="rollout-pause",
    ),
    path(
        "rollouts/<int:rollout_id>/resume",
        rollout_api.control("resume", "Resume a paused rollout"),
        name="rollout-resume",
    ),
    path(
        "rollouts/<int:rollout_id>/cancel",
        rollout_api.control("cancel", "Cancel the rollout"),
        name="rollout-cancel",
    ),
    path("webhooks", webhook_api.WebhooksView.as_view(), name="webhooks"),
    path("webhooks/<int:subscription_id>", webhook_api.WebhookView.as_view(), name="webhook"),
]

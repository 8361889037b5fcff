from django.urls import path

from consent import api

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
]

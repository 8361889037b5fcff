from django.urls import path

from ads import decisions_api, signals_api

urlpatterns = [
    path("signals", signals_api.SignalsView.as_view(), name="signals"),
    path("ads/decisions", decisions_api.DecisionsView.as_view(), name="ad-decisions"),
    path("ads/events", decisions_api.AdEventsView.as_view(), name="ad-events"),
]

"""The privacy dashboard's consent pages, and the GPC declaration."""

from django.urls import path

from consent import views

urlpatterns = [
    path(".well-known/gpc.json", views.gpc_json, name="gpc-json"),
    path("dashboard/", views.home, name="dashboard-home"),
    path("dashboard/signin", views.signin, name="dashboard-signin"),
    path("dashboard/login/<str:token>", views.link_signin, name="dashboard-link"),
    path("dashboard/signout", views.signout, name="dashboard-signout"),
    path("dashboard/signed-out", views.signed_out, name="dashboard-signed-out"),
    path("dashboard/choices/<slug:purpose_key>", views.choice, name="dashboard-choice"),
    path("dashboard/policy-update", views.policy_update, name="dashboard-policy-update"),
    path("dashboard/policy/<str:label>", views.policy_text, name="dashboard-policy"),
    path("dashboard/history", views.history, name="dashboard-history"),
    path("dashboard/history/<int:event_id>/receipt", views.receipt, name="dashboard-receipt"),
    path("dashboard/data", views.your_data, name="dashboard-data"),
    path("dashboard/data/export", views.export, name="dashboard-export"),
]

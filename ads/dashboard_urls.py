"""The privacy dashboard's ads pages."""

from django.urls import path

from ads import views

urlpatterns = [
    path("", views.ads, name="dashboard-ads"),
    path("hide", views.hide, name="dashboard-ads-hide"),
    path("hidden/<int:advertiser_id>/show", views.unhide, name="dashboard-ads-unhide"),
    path("erase", views.erase, name="dashboard-ads-erase"),
]

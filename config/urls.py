from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from config.views import healthz

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("", include("consent.dashboard_urls")),
    path("dashboard/ads/", include("ads.dashboard_urls")),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/v1/", include("consent.urls")),
    path("api/v1/", include("ads.urls")),
    path("api/v1/", include("billing.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api_docs.html"),
        name="api-docs",
    ),
]

handler400 = "consent.problems.handler400"
handler404 = "consent.problems.handler404"
handler500 = "consent.problems.handler500"

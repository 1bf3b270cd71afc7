"""URL routes."""

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from curation import api, sign_in, views

router = DefaultRouter()
router.include_format_suffixes = False  # no `.json` twins: one URL per route
router.register("experiments", api.ExperimentViewSet, basename="experiment")
router.register("generations", api.GenerationViewSet, basename="generation")
router.register("samples", api.SampleViewSet, basename="sample")
router.register("votes", api.VoteViewSet, basename="vote")
router.register("exports", api.ExportViewSet, basename="export")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include(router.urls)),
    path("api/token/", sign_in.IssueToken.as_view(), name="api-token"),
    path("api/token/revoke/", sign_in.RevokeToken.as_view(), name="api-token-revoke"),
    path("api/token/revoke-all/", sign_in.RevokeAllTokens.as_view(), name="api-token-revoke-all"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # Media through the app, for staff: no separate media server in a deployment.
    path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", views.media, name="media"),
    path("healthz/", views.healthz, name="healthz"),
    path("healthz/ready", views.healthz_ready, name="healthz-ready"),
    path("metrics", views.metrics, name="metrics"),
    path("", include("curation.urls")),
]

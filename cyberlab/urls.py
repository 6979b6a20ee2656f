from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cyberlab import api, health

# Every route has its own first segments, so the order changes nothing but how many
# patterns a request is matched against: the most read come first (the leaderboard, a
# machine's status, which must come before the lab routes sharing `labs/<id>/`).
api_v1 = [
    path("", api.ApiRootView.as_view(), name="api-root"),
    path("leaderboard/", include("leaderboard.urls")),
    path("", include("vms.urls")),
    path("", include("labs.urls")),
    path("auth/", include("cyberlab.accounts.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
]

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
]

if settings.BENCH_CEILING:
    urlpatterns += [
        path("bench/ceiling/", api.CeilingView.as_view(), name="bench-ceiling"),
        path("bench/ceiling/signed-in/", api.SignedInCeilingView.as_view(), name="bench-ceiling-signed-in"),
    ]

handler404 = "cyberlab.api.not_found"
handler500 = "cyberlab.api.server_error"

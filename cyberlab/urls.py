from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from cyberlab import api, health, metrics

# No two routes match the same path, so the order only decides how many patterns a
# request is tried against: the most read come first (the leaderboard, then a machine's
# status, which the SPA polls). The includes stay flat: a level of nesting costs more
# than the few patterns it would skip.
api_v1 = [
    path("", api.ApiRootView.as_view(), name="api-root"),
    path("leaderboard/", include("leaderboard.urls")),
    path("", include("vms.urls")),
    path("", include("labs.urls")),
    path("auth/", include("cyberlab.accounts.urls")),
    path("events/", include("cyberlab.events.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
]

# The API first: nearly every request is one of its.
urlpatterns = [
    path("api/v1/", include(api_v1)),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    # What a newcomer opening the server's address finds: what this is, and where to go.
    path("", TemplateView.as_view(template_name="cyberlab/home.html"), name="home"),
]

admin.site.site_header = "CyberLab administration"
admin.site.site_title = "CyberLab admin"
admin.site.index_title = "Courses, labs, learners and machines"

if settings.BENCH_CEILING:
    # The benchmark's ceilings and Postgres-only references (bench/).
    urlpatterns += [path("bench/", include("bench.urls"))]

handler400 = "cyberlab.api.bad_request"
handler404 = "cyberlab.api.not_found"
handler500 = "cyberlab.api.server_error"

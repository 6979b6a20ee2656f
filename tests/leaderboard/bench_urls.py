"""The project's URLs with the benchmark's views mounted under `/bench/`, as cyberlab.urls
mounts them when BENCH_CEILING is on."""

from django.urls import include, path

from cyberlab.urls import urlpatterns as project_urlpatterns

urlpatterns = [*project_urlpatterns, path("bench/", include("bench.urls"))]

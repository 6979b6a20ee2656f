"""The benchmark's own views, mounted under `/bench/` when BENCH_CEILING is on."""

from django.urls import path

from bench import views

urlpatterns = [
    path("ceiling/", views.CeilingView.as_view(), name="bench-ceiling"),
    path("ceiling/signed-in/", views.SignedInCeilingView.as_view(), name="bench-ceiling-signed-in"),
    path("pg/leaderboard/", views.PostgresLeaderboardView.as_view(), name="bench-pg-leaderboard"),
    path("pg/leaderboard/me/", views.PostgresLeaderboardMeView.as_view(), name="bench-pg-leaderboard-me"),
]

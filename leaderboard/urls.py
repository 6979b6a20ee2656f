from django.urls import path

from leaderboard import api

# Mounted under `leaderboard/` (cyberlab.urls).
urlpatterns = [
    path("", api.LeaderboardApi.as_view(), name="leaderboard"),
    path("me/", api.LeaderboardMeApi.as_view(), name="leaderboard-me"),
    path("courses/<slug:slug>/", api.LeaderboardCourseApi.as_view(), name="leaderboard-course"),
    path("weekly/", api.LeaderboardWeeklyApi.as_view(), name="leaderboard-weekly"),
]

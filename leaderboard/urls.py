from django.urls import path

from leaderboard import api

urlpatterns = [
    path("leaderboard/", api.LeaderboardApi.as_view(), name="leaderboard"),
    path("leaderboard/me/", api.LeaderboardMeApi.as_view(), name="leaderboard-me"),
    path("leaderboard/courses/<slug:slug>/", api.LeaderboardCourseApi.as_view(), name="leaderboard-course"),
    path("leaderboard/weekly/", api.LeaderboardWeeklyApi.as_view(), name="leaderboard-weekly"),
]

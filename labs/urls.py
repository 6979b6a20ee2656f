from django.urls import include, path

from labs import api

# Grouped by their first segment, so a path is matched against one prefix per group
# rather than against every route.
urlpatterns = [
    path(
        "courses/",
        include(
            [
                path("", api.CourseListApi.as_view(), name="course-list"),
                path("<slug:slug>/", api.CourseDetailApi.as_view(), name="course-detail"),
                path("<slug:slug>/enroll/", api.CourseEnrollApi.as_view(), name="course-enroll"),
            ]
        ),
    ),
    path(
        "labs/<int:lab_id>/",
        include(
            [
                path("", api.LabDetailApi.as_view(), name="lab-detail"),
                path("flags/<int:flag_id>/submit/", api.FlagSubmitApi.as_view(), name="flag-submit"),
            ]
        ),
    ),
    path(
        "quizzes/<int:quiz_id>/",
        include(
            [
                path("", api.QuizDetailApi.as_view(), name="quiz-detail"),
                path("attempts/", api.QuizAttemptApi.as_view(), name="quiz-attempts"),
            ]
        ),
    ),
    path("me/progress/", api.MyProgressApi.as_view(), name="my-progress"),
]

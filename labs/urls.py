from django.urls import path

from labs import api

urlpatterns = [
    path("courses/", api.CourseListApi.as_view(), name="course-list"),
    path("courses/<slug:slug>/", api.CourseDetailApi.as_view(), name="course-detail"),
    path("courses/<slug:slug>/enroll/", api.CourseEnrollApi.as_view(), name="course-enroll"),
    path("labs/<int:lab_id>/", api.LabDetailApi.as_view(), name="lab-detail"),
    path(
        "labs/<int:lab_id>/flags/<int:flag_id>/submit/",
        api.FlagSubmitApi.as_view(),
        name="flag-submit",
    ),
    path("quizzes/<int:quiz_id>/", api.QuizDetailApi.as_view(), name="quiz-detail"),
    path("quizzes/<int:quiz_id>/attempts/", api.QuizAttemptApi.as_view(), name="quiz-attempts"),
    path("me/progress/", api.MyProgressApi.as_view(), name="my-progress"),
]

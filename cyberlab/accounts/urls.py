from django.urls import path

from cyberlab.accounts import api

urlpatterns = [
    path("register/", api.RegisterApi.as_view(), name="auth-register"),
    path("login/", api.LoginApi.as_view(), name="auth-login"),
    path("logout/", api.LogoutApi.as_view(), name="auth-logout"),
    path("me/", api.MeApi.as_view(), name="auth-me"),
    path("token/", api.TokenApi.as_view(), name="auth-token"),
    path("password/", api.PasswordChangeApi.as_view(), name="auth-password"),
    path("sessions/", api.SessionListApi.as_view(), name="auth-sessions"),
    path("sessions/revoke-others/", api.SessionRevokeOthersApi.as_view(), name="auth-sessions-revoke-others"),
    path("sessions/<uuid:session_id>/", api.SessionRevokeApi.as_view(), name="auth-session"),
]

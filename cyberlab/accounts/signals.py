"""Sign-ins and sign-outs keep their `UserSession` records (connected in `apps.ready`)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.dispatch import receiver

from cyberlab.accounts import services


@receiver(user_logged_in, dispatch_uid="accounts.user_session_record")
def record_sign_in(sender, request, user, **kwargs) -> None:
    if request is not None and hasattr(request, "session"):
        services.user_session_record(request=request, user=user)


@receiver(user_logged_out, dispatch_uid="accounts.user_session_end")
def end_sign_in(sender, request, user, **kwargs) -> None:
    if request is not None and getattr(request, "session", None) is not None and request.session.session_key:
        services.user_session_end_by_key(session_key=request.session.session_key)

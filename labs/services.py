"""Actions on the catalogue and on learners' progress."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from cyberlab.accounts.models import User
from labs.flags import answer_digest, dynamic_flag_value
from labs.models import Flag, FlagKind, IssuedFlag, Lab


def flag_issue(*, user: User, flag: Flag) -> str:
    """The learner's own value of a dynamic flag, recorded so a shared copy is traceable."""
    value = dynamic_flag_value(user_id=user.pk, flag_id=flag.pk)
    if not IssuedFlag.objects.filter(user=user, flag=flag).exists():
        try:
            with transaction.atomic():
                IssuedFlag.objects.create(user=user, flag=flag, digest=answer_digest(value))
        except IntegrityError:
            pass  # issued concurrently by another request: the same value either way
    return value


def lab_machine_flags(*, user: User, lab: Lab) -> dict[str, str]:
    """Environment variables handing a learner's machine their dynamic flags.

    `FLAG` is the lab's first dynamic flag; `FLAG_1`, `FLAG_2`, ... are all of them in order.
    """
    env: dict[str, str] = {}
    dynamic = lab.flags.filter(kind=FlagKind.DYNAMIC).order_by("order", "id")
    for index, flag in enumerate(dynamic, start=1):
        value = flag_issue(user=user, flag=flag)
        env.setdefault("FLAG", value)
        env[f"FLAG_{index}"] = value
    return env

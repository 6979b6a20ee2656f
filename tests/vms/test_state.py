"""The Redis scripts of the live state: claims, versioned writes, guarded drops."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from tests.factories import UserFactory
from tests.labs.factories import LabFactory
from vms import state
from vms.models import VMSession, VMStatus

pytestmark = pytest.mark.django_db


def session_for(user, lab, **values) -> VMSession:
    now = timezone.now()
    fields = {
        "id": uuid.uuid4(),
        "user": user,
        "lab": lab,
        "provider": "fake",
        "image": "cyberlab/demo",
        "status": VMStatus.PROVISIONING,
        "started_at": now,
        "expires_at": now + timedelta(hours=2),
        "status_changed_at": now,
    }
    fields.update(values)
    return VMSession(**fields)


def test_key_names_are_the_documented_ones():
    assert state.state_key(user_id=3, lab_id=9) == "vm:state:3:9"
    assert state.expiry_key() == "vm:expiry"
    assert state.expiry_member(user_id=3, lab_id=9) == "3:9"
    assert state.user_key(user_id=3) == "vm:user:3"


def test_claim_returns_the_live_state_instead_of_a_second_claim(redis):
    user, lab = UserFactory(), LabFactory()
    first = session_for(user, lab)
    assert state.claim(session=first).outcome == "claimed"
    second = state.claim(session=session_for(user, lab))
    assert second.outcome == "live"
    assert second.state["session_id"] == str(first.pk)


def test_claim_takes_over_a_failed_or_stopping_state(redis):
    user, lab = UserFactory(), LabFactory()
    old = session_for(user, lab, status=VMStatus.STOPPING)
    state.put(session=old)
    new = session_for(user, lab)
    assert state.claim(session=new).outcome == "claimed"
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "session_id").decode() == str(new.pk)


def test_claim_ignores_and_cleans_index_entries_whose_state_is_gone(redis):
    # given the learner's set names a lab whose state Redis evicted
    user = UserFactory()
    redis.sadd(f"vm:user:{user.pk}", "424242")
    # when
    claim = state.claim(session=session_for(user, LabFactory()))
    # then
    assert claim.outcome == "claimed"
    assert redis.sismember(f"vm:user:{user.pk}", "424242") == 0


def test_claim_counts_the_global_cap_from_the_expiry_index(redis):
    with override_settings(VM_MAX_TOTAL=1):
        assert state.claim(session=session_for(UserFactory(), LabFactory())).outcome == "claimed"
        assert state.claim(session=session_for(UserFactory(), LabFactory())).outcome == "total_limit"


def test_drop_never_removes_another_sessions_state(redis):
    user, lab = UserFactory(), LabFactory()
    current = session_for(user, lab)
    state.claim(session=current)
    assert state.drop(session_id=str(uuid.uuid4()), user_id=user.pk, lab_id=lab.pk) is False
    assert redis.hget(f"vm:state:{user.pk}:{lab.pk}", "session_id").decode() == str(current.pk)
    assert redis.zcard("vm:expiry") == 1


def test_put_of_a_reset_replaces_only_the_session_it_names(redis):
    user, lab = UserFactory(), LabFactory()
    old = session_for(user, lab, status=VMStatus.RUNNING)
    state.put(session=old)
    intruder = session_for(user, lab)
    assert state.put(session=intruder) is False
    assert state.put(session=intruder, replaces=str(old.pk)) is True


def test_forget_members_keeps_entries_of_live_states(redis):
    user, lab = UserFactory(), LabFactory()
    state.claim(session=session_for(user, lab))
    redis.zadd("vm:expiry", {"77:88": 1})
    assert state.forget_members(members=[(user.pk, lab.pk), (77, 88)]) == 1
    assert redis.zrange("vm:expiry", 0, -1) == [f"{user.pk}:{lab.pk}".encode()]


def test_the_lock_admits_one_holder_and_only_its_holder_releases_it(redis):
    token = state.lock_acquire(name="sweep", ttl=5)
    assert token
    assert state.lock_acquire(name="sweep", ttl=5) is None
    state.lock_release(name="sweep", token="not-the-token")
    assert state.lock_acquire(name="sweep", ttl=5) is None
    state.lock_release(name="sweep", token=token)
    assert state.lock_acquire(name="sweep", ttl=5)

import time

import pytest
from celery import Celery, shared_task
from django.conf import settings

from cyberlab.celery import app
from cyberlab.queue import BrokerUnavailable, enqueue
from tests.conftest import free_port


@shared_task(name="tests.noop")
def noop() -> None:
    return None


def _nothing() -> None:
    return None


def test_publishing_to_a_dead_broker_fails_fast_with_503():
    # given an app configured like ours, but whose broker nobody listens on
    dead = Celery("dead-broker", broker=f"redis://127.0.0.1:{free_port()}/0", set_as_current=False)
    dead.conf.update(
        broker_transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        broker_connection_timeout=settings.CELERY_BROKER_CONNECTION_TIMEOUT,
    )
    task = dead.task(name="tests.dead_noop")(_nothing)
    started = time.monotonic()
    # when
    with pytest.raises(BrokerUnavailable) as raised:
        enqueue(task)
    elapsed = time.monotonic() - started
    # then
    assert raised.value.status_code == 503
    assert elapsed < 1.5


def test_publishing_to_the_real_broker_queues_the_task(redis):
    enqueue(noop)
    broker = redis.from_url(settings.CELERY_BROKER_URL)
    assert broker.llen("celery") == 1


def test_tasks_only_accept_json():
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"


@pytest.mark.django_db(transaction=True)
def test_a_worker_connection_postgres_dropped_between_tasks_is_replaced_before_the_next():
    import psycopg
    from celery.signals import task_prerun
    from django.db import connection

    from cyberlab.accounts.models import User

    # given the connection a worker keeps between tasks, ended by Postgres meanwhile
    # (a restart, an idle timeout)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    db = connection.settings_dict
    address = {"host": db["HOST"], "port": db["PORT"], "user": db["USER"], "dbname": db["NAME"]}
    with psycopg.connect(**address, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    # when the next task starts (the signal Celery sends before running it)
    task_prerun.send(sender=noop, task_id="next", task=noop, args=(), kwargs={})
    # then its queries reach Postgres on a fresh connection
    User.objects.create(username="after-the-drop")
    assert User.objects.filter(username="after-the-drop").exists()

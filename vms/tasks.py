"""Celery tasks: thin wrappers around vms.services and vms.maintenance."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown

from vms import maintenance, services, watch
from vms.providers import ProviderError


@worker_ready.connect(dispatch_uid="vms.watch_start")
def _watch_engine(**kwargs) -> None:
    watch.watch_start()


@worker_shutdown.connect(dispatch_uid="vms.watch_stop")
def _stop_watching(**kwargs) -> None:
    watch.watch_stop()


@shared_task(name=services.PROVISION_TASK, acks_late=True)
def vm_provision(session_id: str) -> None:
    services.vm_provision(session_id=session_id)


# An engine that does not answer is retried a few times; after that the sweeper's
# pass over stuck stops takes over, so a teardown is never given up on.
@shared_task(
    name=services.TEARDOWN_TASK,
    acks_late=True,
    autoretry_for=(ProviderError,),
    retry_backoff=2,
    retry_backoff_max=60,
    max_retries=5,
)
def vm_teardown(session_id: str) -> None:
    services.vm_teardown(session_id=session_id)


@shared_task
def vm_sweep() -> None:
    maintenance.vm_sweep()


@shared_task
def vm_reconcile() -> None:
    maintenance.vm_reconcile()

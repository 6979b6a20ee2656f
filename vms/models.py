"""The durable ledger of lab machines: one VMSession row for every machine ever started.

Redis holds the live view (vms/state.py); this table is the truth it is rebuilt from,
the fence that keeps starts exactly-once, and the staff's history.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q


class VMStatus(models.TextChoices):
    PROVISIONING = "provisioning", "Provisioning"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"


# A machine that holds the learner's place for a lab: the partial unique constraint and
# the limits count these. A stopping machine is on its way out and does not.
ACTIVE_STATUSES = (VMStatus.PROVISIONING, VMStatus.RUNNING)
# A row is open (its machine may exist) exactly while it is in one of these.
OPEN_STATUSES = (VMStatus.PROVISIONING, VMStatus.RUNNING, VMStatus.STOPPING)


class StopReason(models.TextChoices):
    USER = "user", "Stopped by the learner"
    EXPIRED = "expired", "Expired"
    ADMIN = "admin", "Stopped by staff"
    FAILED = "failed", "Failed"
    ORPHAN = "orphan", "Orphan removed"
    RESET = "reset", "Reset"
    IDLE = "idle", "Idle"


class VMSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="vm_sessions")
    lab = models.ForeignKey("labs.Lab", on_delete=models.CASCADE, related_name="vm_sessions")
    provider = models.CharField(max_length=32)
    instance_id = models.CharField(max_length=128, blank=True)
    image = models.CharField(max_length=255)
    status = models.CharField(max_length=16, choices=VMStatus.choices, default=VMStatus.PROVISIONING)
    connection = models.JSONField(default=dict, blank=True)
    # The machine's origin at the gateway (vms/gateway.py), given when it runs.
    gateway_name = models.CharField(max_length=32, unique=True, null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(
        help_text="When the learner asked for it; the lifetime counts from here."
    )
    expires_at = models.DateTimeField()
    renewals = models.PositiveIntegerField(default=0)
    status_changed_at = models.DateTimeField()
    running_at = models.DateTimeField(null=True, blank=True, help_text="When the machine first ran.")
    stopped_at = models.DateTimeField(null=True, blank=True)
    stop_reason = models.CharField(max_length=16, choices=StopReason.choices, blank=True)
    failure = models.CharField(max_length=500, blank=True, help_text="Why a start failed.")
    warned_at = models.DateTimeField(
        null=True, blank=True, help_text="When the first expiry warning was sent."
    )
    final_warned_at = models.DateTimeField(
        null=True, blank=True, help_text="When the final expiry warning was sent."
    )
    # Bumped on every change under the row lock: Redis only accepts a newer version of
    # the state, so a late writer can never roll the live view back.
    version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "machine session"
        permissions = [
            ("stop_vmsession", "Can force-stop a lab machine"),
            ("enter_vmsession", "Can enter a learner's machine through the gateway"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "lab"],
                condition=Q(status__in=[s.value for s in ACTIVE_STATUSES]),
                name="vm_session_one_active_per_lab",
            ),
            models.CheckConstraint(
                condition=Q(stopped_at__isnull=True, status__in=[s.value for s in OPEN_STATUSES])
                | Q(stopped_at__isnull=False, status__in=[VMStatus.STOPPED.value, VMStatus.FAILED.value]),
                name="vm_session_closed_iff_stopped_at",
            ),
        ]
        indexes = [
            # The sweeper's ledger pass reads only what is due, however many are live.
            models.Index(
                fields=["expires_at"], condition=Q(stopped_at__isnull=True), name="vm_open_by_expiry"
            ),
            models.Index(
                fields=["status", "status_changed_at"],
                condition=Q(stopped_at__isnull=True),
                name="vm_open_by_status_age",
            ),
            models.Index(fields=["user", "created_at"], name="vm_session_user_created"),
        ]

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None


class MachineAccess(models.Model):
    """A staff member's way into a learner's machine, asked for with a reason: the entry
    links made for it carry its id, and every entry through one is counted here."""

    session = models.ForeignKey(VMSession, on_delete=models.CASCADE, related_name="staff_accesses")
    staff = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="machine_accesses"
    )
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)
    entries = models.PositiveIntegerField(default=0, help_text="Entry links used.")
    first_entered_at = models.DateTimeField(null=True, blank=True)
    last_entered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "staff machine access"
        verbose_name_plural = "staff machine accesses"


class LiveMachine(VMSession):
    """The admin's page of live machines, read from Redis."""

    class Meta:
        proxy = True
        verbose_name = "live machine"

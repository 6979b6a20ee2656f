"""Staff pages: live machines straight from Redis, and the ledger's history."""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from rest_framework.exceptions import APIException

from cyberlab.accounts.models import User
from labs.models import Lab
from vms import selectors, services
from vms.errors import MachineNotFound
from vms.models import OPEN_STATUSES, LiveMachine, StopReason, VMSession

LIVE_PAGE_SIZE = 500


def _can_stop(request) -> bool:
    return request.user.is_active and request.user.is_staff and request.user.has_perm("vms.stop_vmsession")


@admin.register(VMSession)
class VMSessionAdmin(admin.ModelAdmin):
    """The durable history of every machine; read-only, like any ledger."""

    list_display = (
        "short_id",
        "user",
        "lab",
        "status",
        "stop_reason",
        "started_at",
        "expires_at",
        "stopped_at",
    )
    list_filter = ("status", "stop_reason", "provider", "started_at", "lab__course")
    search_fields = ("user__username", "user__email", "lab__title", "instance_id", "image")
    date_hierarchy = "started_at"
    list_select_related = ("user", "lab")
    ordering = ("-started_at",)
    actions = ["stop_selected"]
    readonly_fields = [field.name for field in VMSession._meta.fields]

    @admin.display(description="session", ordering="id")
    def short_id(self, obj: VMSession) -> str:
        return str(obj.pk)[:8]

    def get_search_results(self, request, queryset, search_term):
        results, duplicates = super().get_search_results(request, queryset, search_term)
        try:
            session_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, duplicates
        return results | queryset.filter(pk=session_id), duplicates

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Stop the selected live machines", permissions=["stop"])
    def stop_selected(self, request, queryset):
        stopped = 0
        for session_id in queryset.filter(status__in=OPEN_STATUSES).values_list("pk", flat=True):
            try:
                services.vm_stop_session(session_id=session_id, reason=StopReason.ADMIN)
            except MachineNotFound:
                continue  # closed since the page was shown: nothing left to stop
            stopped += 1
        self.message_user(request, f"{stopped} machine(s) stopping.", messages.SUCCESS)

    def has_stop_permission(self, request) -> bool:
        return _can_stop(request)


@admin.register(LiveMachine)
class LiveMachineAdmin(admin.ModelAdmin):
    """Every live machine, with a stop button: Redis's list, or the ledger's when Redis lost it."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        stop = self.admin_site.admin_view(require_POST(self.stop_view))
        return [path("<uuid:session_id>/stop/", stop, name="vms_livemachine_stop"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        total, machines = selectors.vm_live_machines(limit=LIVE_PAGE_SIZE, offset=0)
        users = User.objects.in_bulk({machine.user_id for machine in machines})
        labs = Lab.objects.in_bulk({machine.lab_id for machine in machines})
        rows = [
            {
                "machine": machine,
                "user": users.get(machine.user_id),
                "lab": labs.get(machine.lab_id),
                "minutes_left": machine.seconds_left // 60,
                "addresses": [port["address"] for port in (machine.connection or {}).get("ports", [])],
            }
            for machine in machines
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Live machines",
            "opts": self.model._meta,
            "rows": rows,
            "total": total,
            "now": timezone.now(),
            "can_stop": _can_stop(request),
            **(extra_context or {}),
        }
        return render(request, "admin/vms/live_machines.html", context)

    def stop_view(self, request, session_id):
        if not _can_stop(request):
            raise PermissionDenied
        try:
            services.vm_stop_session(session_id=session_id, reason=StopReason.ADMIN)
        except APIException as error:
            self.message_user(request, str(error.detail), messages.WARNING)
        else:
            self.message_user(request, f"Machine {str(session_id)[:8]} is stopping.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:vms_livemachine_changelist"))

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
from vms import gateway, selectors, services
from vms.errors import MachineNotFound
from vms.models import OPEN_STATUSES, LiveMachine, MachineAccess, StopReason, VMSession

LIVE_PAGE_SIZE = 500


def _can_stop(request) -> bool:
    return request.user.is_active and request.user.is_staff and request.user.has_perm("vms.stop_vmsession")


def _can_enter(request) -> bool:
    return request.user.is_active and request.user.is_staff and request.user.has_perm("vms.enter_vmsession")


class MachineAccessInline(admin.TabularInline):
    """Who of the staff entered this machine, why, and how often."""

    model = MachineAccess
    extra = 0
    can_delete = False
    fields = ("staff", "reason", "created_at", "entries", "first_entered_at", "last_entered_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


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
    inlines = [MachineAccessInline]

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
        enter = self.admin_site.admin_view(require_POST(self.enter_view))
        return [
            path("<uuid:session_id>/stop/", stop, name="vms_livemachine_stop"),
            path("<uuid:session_id>/enter/", enter, name="vms_livemachine_enter"),
            *super().get_urls(),
        ]

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
                "addresses": [
                    port.get("address") or f"{port['port']}/{port['protocol']} (through the gateway)"
                    for port in (machine.connection or {}).get("ports", [])
                ],
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
            "can_enter": _can_enter(request),
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

    def enter_view(self, request, session_id):
        """Records the access with its reason, then opens the machine's first HTTP port (or
        shows the TCP ports' commands) through the gateway."""
        if not _can_enter(request):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:vms_livemachine_changelist"))
        reason = request.POST.get("reason", "").strip()
        if not reason:
            self.message_user(request, "Say why you enter: the reason is recorded.", messages.ERROR)
            return back
        try:
            access = services.vm_staff_access(staff=request.user, session_id=session_id, reason=reason[:500])
        except APIException as error:
            self.message_user(request, str(error.detail), messages.WARNING)
            return back
        session = access.session
        found = gateway.links(
            request=request,
            connection=session.connection,
            session_id=str(session.pk),
            user_id=session.user_id,
            access=access.pk,
        )
        for port in session.connection.get("ports", []):
            link = found.get(port["port"], {})
            if port.get("protocol") == "http" and "url" in link:
                return HttpResponseRedirect(link["url"])
        commands = [link["command"] for link in found.values() if "command" in link]
        if not commands:
            self.message_user(request, "The gateway serves nothing of this machine.", messages.WARNING)
        for command in commands:
            self.message_user(request, command, messages.INFO)
        return back


@admin.register(MachineAccess)
class MachineAccessAdmin(admin.ModelAdmin):
    """The record of staff entering learners' machines; nobody edits it."""

    list_display = ("created_at", "staff", "session", "reason", "entries", "last_entered_at")
    list_filter = ("created_at",)
    search_fields = ("staff__username", "session__user__username", "reason")
    list_select_related = ("staff", "session")
    readonly_fields = [field.name for field in MachineAccess._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

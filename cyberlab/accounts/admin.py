from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from cyberlab.accounts import services
from cyberlab.accounts.models import User, UserSession


class LiveSessionInline(admin.TabularInline):
    """The user's live sessions, read-only: staff end them with the user action."""

    model = UserSession
    verbose_name = "live session"
    verbose_name_plural = "live sessions"
    fields = ("id", "ip", "user_agent", "created_at", "last_seen_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).filter(ended_at__isnull=True)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("CyberLab", {"fields": ("display_name", "hidden_from_leaderboard")}),
    )
    list_display = ("username", "display_name", "email", "is_staff", "hidden_from_leaderboard")
    list_filter = (*DjangoUserAdmin.list_filter, "hidden_from_leaderboard")
    search_fields = ("username", "display_name", "email")
    inlines = [LiveSessionInline]
    actions = ["revoke_all_sessions"]

    @admin.action(description="Sign out everywhere: revoke all sessions and rotate the API token")
    def revoke_all_sessions(self, request, queryset):
        total = 0
        for user in queryset:
            ended, _ = services.user_sessions_revoke_all(user=user)
            total += ended
        self.message_user(
            request, f"Revoked {total} session(s) of {queryset.count()} user(s).", messages.SUCCESS
        )


@admin.register(UserSession)
class UserSessionAdmin(admin.ModelAdmin):
    """Every sign-in, live and ended: who, from where, and how it ended."""

    list_display = ("user", "ip", "user_agent", "created_at", "last_seen_at", "ended_at", "end_reason")
    list_filter = ("end_reason", ("ended_at", admin.EmptyFieldListFilter))
    list_select_related = ("user",)
    search_fields = ("user__username", "ip")
    date_hierarchy = "created_at"
    fields = ("id", "user", "ip", "user_agent", "created_at", "last_seen_at", "ended_at", "end_reason")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

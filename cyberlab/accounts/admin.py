from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin

from cyberlab.accounts.models import User


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    fieldsets = (
        *DjangoUserAdmin.fieldsets,
        ("CyberLab", {"fields": ("display_name", "hidden_from_leaderboard")}),
    )
    list_display = ("username", "display_name", "email", "is_staff", "hidden_from_leaderboard")
    list_filter = (*DjangoUserAdmin.list_filter, "hidden_from_leaderboard")
    search_fields = ("username", "display_name", "email")

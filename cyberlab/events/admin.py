from django.contrib import admin, messages

from cyberlab.events import services
from cyberlab.events.models import Announcement


@admin.register(Announcement)
class AnnouncementAdmin(admin.ModelAdmin):
    """Saving a new announcement sends it: to everyone, or to one course's learners."""

    list_display = ["title", "course", "created_by", "published_at"]
    list_filter = ["course"]
    search_fields = ["title", "body"]
    readonly_fields = ["created_by", "published_at"]

    def has_change_permission(self, request, obj=None) -> bool:
        # What was sent cannot be unsent: an announcement is written once.
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        services.announcement_publish(announcement=obj, author=request.user)
        audience = "everyone" if obj.course is None else f"the learners of {obj.course}"
        messages.info(request, f"Sent to {audience}.")

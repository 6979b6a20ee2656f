from django.conf import settings
from django.db import models


class Announcement(models.Model):
    """A message from staff, pushed to every learner or to one course's enrolled learners."""

    title = models.CharField(max_length=200)
    body = models.TextField(help_text="Markdown.")
    # A string reference: the catalogue app knows nothing of events.
    course = models.ForeignKey(
        "labs.Course",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        help_text="Only this course's enrolled learners receive it; empty: everyone.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

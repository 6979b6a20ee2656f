"""The leaderboard's answers, one serializer per shape: what the API renders and what its
schema documents (pages are wrapped in `cyberlab.api.Pagination`'s envelope)."""

import datetime

from rest_framework import serializers

# The boards keep time in UTC, and say so ("Z") whatever TIME_ZONE is; fixing the zone
# also spares a lookup of the active one per value.
UTC = datetime.UTC


class StandingSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    user_id = serializers.IntegerField()
    display_name = serializers.CharField()
    points = serializers.IntegerField()
    last_scored_at = serializers.DateTimeField(
        default_timezone=UTC, help_text="When the learner reached these points (to the second)."
    )


class WeeklyStandingSerializer(StandingSerializer):
    """A standing on this week's board (its own schema component, so the weekly page's
    envelope, which adds `since`, is documented apart from the others)."""

    points = serializers.IntegerField(help_text="Points earned since Monday 00:00 UTC.")


class MyStandingSerializer(serializers.Serializer):
    rank = serializers.IntegerField(allow_null=True, help_text="Null when I am not on the board.")
    points = serializers.IntegerField()
    last_scored_at = serializers.DateTimeField(allow_null=True, default_timezone=UTC)
    count = serializers.IntegerField(help_text="Learners on the board.")
    around = StandingSerializer(many=True, help_text="The standings just above and below mine.")

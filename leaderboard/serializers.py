from rest_framework import serializers


class StandingSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    user_id = serializers.IntegerField()
    display_name = serializers.CharField()
    points = serializers.IntegerField()
    last_scored_at = serializers.DateTimeField(
        help_text="When the learner reached these points (to the second)."
    )


class StandingsPageSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = StandingSerializer(many=True)


class WeeklyPageSerializer(StandingsPageSerializer):
    since = serializers.DateTimeField(help_text="Monday 00:00 UTC of this week.")


class MyStandingSerializer(serializers.Serializer):
    rank = serializers.IntegerField(allow_null=True, help_text="Null when I am not on the board.")
    points = serializers.IntegerField()
    last_scored_at = serializers.DateTimeField(allow_null=True)
    count = serializers.IntegerField(help_text="Learners on the board.")
    around = StandingSerializer(many=True, help_text="The standings just above and below mine.")

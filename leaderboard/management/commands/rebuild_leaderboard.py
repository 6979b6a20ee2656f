from django.core.management.base import BaseCommand

from leaderboard import services


class Command(BaseCommand):
    help = "Rebuilds every leaderboard in Redis from the solves in Postgres."

    def handle(self, *args, **options):
        result = services.leaderboard_rebuild()
        self.stdout.write(
            self.style.SUCCESS(
                f"Leaderboard rebuilt: {result.learners} learners, {result.solves} solves, "
                f"{result.courses} course boards, cursor at solve {result.cursor}."
            )
        )

"""Sweep lab machines now: what is due, stuck starts and stops; or stop them all."""

from django.core.management.base import BaseCommand

from vms.maintenance import vm_sweep


class Command(BaseCommand):
    help = "Tear down expired lab machines now (what the sweeper does every minute)."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Show what would be done; change nothing.")
        parser.add_argument("--user", type=int, help="Only this learner's machines (user id).")
        parser.add_argument("--lab", type=int, help="Only this lab's machines (lab id).")
        parser.add_argument(
            "--all", action="store_true", help="Stop every live machine in scope, due or not."
        )

    def handle(self, *args, dry_run: bool, user: int | None, lab: int | None, all: bool, **options):
        report = vm_sweep(dry_run=dry_run, user_id=user, lab_id=lab, stop_all=all, use_lock=False)
        prefix = "Would stop" if dry_run else "Stopping"
        for label, ids in (
            ("stopped on request", report.stopped),
            ("expired", report.expired),
            ("stuck starting", report.stuck_starting),
            ("stuck stopping", report.stuck_stopping),
        ):
            for session_id in ids:
                self.stdout.write(f"{prefix} {session_id} ({label})")
        for session_id in report.warned:
            self.stdout.write(f"Expiring soon: {session_id}")
        total = (
            len(report.stopped)
            + len(report.expired)
            + len(report.stuck_starting)
            + len(report.stuck_stopping)
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"{prefix} {total} machine(s); {report.forgotten} stale index entr"
                f"{'y' if report.forgotten == 1 else 'ies'}{' (dry run)' if dry_run else ''}."
            )
        )

"""Bring the engine, the ledger and Redis back into agreement now."""

from django.core.management.base import BaseCommand

from vms.maintenance import vm_reconcile


class Command(BaseCommand):
    help = "Remove orphan machines, close vanished ones, rebuild live state from the ledger."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="Show what would be done; change nothing.")

    def handle(self, *args, dry_run: bool, **options):
        report = vm_reconcile(dry_run=dry_run, use_lock=False)
        verb = "Would" if dry_run else "Did"
        for label, ids in (
            ("remove orphan", report.orphans),
            ("close vanished", report.vanished),
            ("rebuild state of", report.rebuilt),
            ("drop ghost state of", report.ghosts),
        ):
            for session_id in ids:
                self.stdout.write(f"{verb} {label} {session_id}")
        for problem in report.problems:
            self.stderr.write(self.style.WARNING(problem))
        self.stdout.write(
            self.style.SUCCESS(
                f"{len(report.orphans)} orphan(s), {len(report.vanished)} vanished, "
                f"{len(report.rebuilt)} rebuilt, {len(report.ghosts)} ghost(s), "
                f"{report.forgotten} stale index entries{' (dry run)' if dry_run else ''}."
            )
        )

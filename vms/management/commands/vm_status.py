"""A table of the machines Redis holds (every vm:state:* key), with time left."""

from django.core.management.base import BaseCommand, CommandError

from cyberlab import redis_client
from vms import state
from vms.selectors import state_view


class Command(BaseCommand):
    help = "List the live machine state in Redis: one row per vm:state:* key."

    def handle(self, *args, **options):
        try:
            states = state.all_states()
        except redis_client.RedisUnavailable as error:
            raise CommandError(f"Redis is unavailable: {error}") from error
        states.sort(key=lambda fields: fields.get("expires_at", ""))
        header = f"{'KEY':<28} {'SESSION':<36} {'STATUS':<12} {'LEFT':>8} {'RENEW':>5}  CONNECTION"
        self.stdout.write(header)
        for fields in states:
            view = state_view(fields, staff=True)
            left = view["seconds_left"]
            addresses = ", ".join(port["address"] for port in (view["connection"] or {}).get("ports", []))
            self.stdout.write(
                f"{fields['key']:<28} {view['session_id']:<36} {view['status']:<12} "
                f"{left // 60:>5}m{left % 60:02d}s {view['renewals']:>5}  {addresses or view['reason'] or ''}"
            )
        self.stdout.write(f"{len(states)} machine(s).")

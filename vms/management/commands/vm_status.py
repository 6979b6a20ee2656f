"""A table of the machines Redis holds (every vm:state:* key), with time left."""

from django.core.management.base import BaseCommand, CommandError

from cyberlab import redis_client
from vms import state
from vms.state import MachineState


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
            machine = MachineState.from_fields(fields)
            left = machine.seconds_left
            addresses = ", ".join(port["address"] for port in (machine.connection or {}).get("ports", []))
            self.stdout.write(
                f"{fields['key']:<28} {machine.session_id:<36} {machine.status:<12} "
                f"{left // 60:>5}m{left % 60:02d}s {machine.renewals:>5}  {addresses or machine.reason or ''}"
            )
        self.stdout.write(f"{len(states)} machine(s).")

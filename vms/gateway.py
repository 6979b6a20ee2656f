"""The way into a machine: an origin of its own at the gateway, entered by its owner only.

A running machine session has an unguessable `gateway_name`; its HTTP ports are served at
VM_GATEWAY_URL with `{name}` filled in (the first HTTP port at `{name}`, any other at
`{name}-{port}`), so a deliberately vulnerable lab never shares an origin with the
platform and its scripts cannot read the platform's cookies or API answers.

`GET labs/{id}/vm/` gives the owner an entry link per HTTP port: signed, valid for
VM_GATEWAY_ENTRY_TTL seconds and once. The gateway (`vms.proxy`) trades it for a cookie
on that origin alone, which names the machine session, the user and the credential the
link was made for (a session record or the API token, by digest). Every request through
the gateway checks that the machine still runs for that user, unexpired, and that the
credential is still live. Both answers are kept by the credential cache, which Postgres
invalidates (the machine's row notifies like a credential does, vms migration 0005):
stopping, expiry, a revoke or a deactivated account cut access at the next request.

Staff holding `vms.enter_vmsession` get links too, each made for a `MachineAccess` row
they open with a reason (`POST admin/vms/{id}/access/`); their pass names that row, every
entry through it is counted on it, and the permission is read again on every request.
Their traffic does not count as the learner's activity.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core import signing
from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from cyberlab import redis_client
from cyberlab.accounts import credentials
from cyberlab.accounts.models import UserSession
from cyberlab.accounts.selectors import session_key_digest
from vms import activity
from vms.models import MachineAccess, VMSession, VMStatus

ENTRY_PATH = "/_cyberlab/enter"
TCP_PATH = "/_tcp/"
COOKIE_NAME = "cyberlab_machine"
_ENTRY_SALT = "vms.gateway.entry"
_COOKIE_SALT = "vms.gateway.cookie"


class Refused(Exception):
    """The gateway's answer instead of the machine's: a status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Target:
    """Where an admitted request goes: the machine's own address on its network."""

    host: str
    port: int
    origin: str
    lab_id: int
    user_id: int  # the machine's owner


def new_name() -> str:
    return secrets.token_hex(12)


def origin(*, name: str, port: int | None = None) -> str:
    """`http://{name}.localhost:8001` for a machine's first HTTP port, `{name}-{port}` else."""
    label = name if port is None else f"{name}-{port}"
    return settings.VM_GATEWAY_URL.format(name=label).rstrip("/")


def _host_pattern() -> re.Pattern:
    template = urlsplit(settings.VM_GATEWAY_URL.replace("{name}", "machinename")).netloc.lower()
    name = r"(?P<name>[0-9a-f]{24})(?:-(?P<port>\d{1,5}))?"
    return re.compile(re.escape(template).replace("machinename", name) + "$")


def parse_host(host: str) -> tuple[str, int | None] | None:
    """(machine name, port or None) for a Host header of the gateway; None for another."""
    match = _host_pattern().match(host.lower())
    if match is None:
        return None
    return match["name"], int(match["port"]) if match["port"] else None


def credential_of(request: HttpRequest) -> str | None:
    """What signed this API request in, as an entry link records it."""
    if isinstance(getattr(request, "auth", None), Token):
        return "t:" + hashlib.sha256(request.auth.key.encode()).hexdigest()
    key = getattr(request, "session", None) and request.session.session_key
    return "s:" + session_key_digest(key) if key else None


def links(
    *, request: HttpRequest, connection: dict, session_id: str, user_id: int, access: int | None = None
) -> dict[int, dict]:
    """Port -> what its owner uses to reach it: for an HTTP port a single-use entry `url`;
    for any other a WebSocket `url` carrying its raw bytes, a bearer `token` and a ready
    `command` (the shipped tunnel client). Empty when there is no gateway, no machine
    name yet, another user asking, or no credential to tie the links to. With `access`
    (a staff `MachineAccess` id) the links are the asking staff member's."""
    name = connection.get("gateway")
    credential = credential_of(request)
    if not settings.VM_GATEWAY_URL or not name or credential is None:
        return {}
    if access is None and request.user.pk != user_id:
        return {}
    found: dict[int, dict] = {}
    http_index = 0
    for entry in connection.get("ports", []):
        port = entry["port"]
        ticket = {"s": session_id, "u": request.user.pk, "c": credential, "p": port}
        if access is not None:
            ticket["a"] = access
        if entry.get("protocol") == "http":
            token = signing.dumps({**ticket, "n": secrets.token_hex(8)}, salt=_ENTRY_SALT, compress=True)
            base = origin(name=name, port=None if http_index == 0 else port)
            found[port] = {"url": f"{base}{ENTRY_PATH}?token={token}"}
            http_index += 1
        else:
            token = signing.dumps(ticket, salt=_COOKIE_SALT, compress=True)
            url = "ws" + origin(name=name).removeprefix("http") + f"{TCP_PATH}{port}"
            local = 2000 + port if port < 1024 else port
            found[port] = {
                "url": url,
                "token": token,
                "command": f"python -m vms.tunnel {url} {local}:{port} --token {token}",
            }
    return found


def redeem(*, host: str, token: str) -> str:
    """The cookie value for a valid, unused entry link to the machine at `host`."""
    try:
        ticket = signing.loads(token, salt=_ENTRY_SALT, max_age=settings.VM_GATEWAY_ENTRY_TTL)
    except signing.SignatureExpired as error:
        raise Refused(
            403, "This entry link has expired: open the machine from the platform again."
        ) from error
    except signing.BadSignature as error:
        raise Refused(403, "This entry link is not valid.") from error
    _admit(host=host, ticket=ticket)
    try:
        with redis_client.connection() as client:
            fresh = client.set(
                f"vm:gateway:entry:{ticket['n']}", 1, nx=True, ex=settings.VM_GATEWAY_ENTRY_TTL
            )
    except redis_client.RedisUnavailable as error:
        raise Refused(503, "Entry links cannot be checked right now; try again in a moment.") from error
    if not fresh:
        raise Refused(403, "This entry link was used already: open the machine from the platform again.")
    if "a" in ticket:
        now = Value(timezone.now(), output_field=DateTimeField())
        MachineAccess.objects.filter(pk=ticket["a"]).update(
            entries=F("entries") + 1, last_entered_at=now, first_entered_at=Coalesce("first_entered_at", now)
        )
    pass_ = {key: ticket[key] for key in ("s", "u", "c", "p", "a") if key in ticket}
    return signing.dumps(pass_, salt=_COOKIE_SALT, compress=True)


def admit(*, host: str, cookie: str | None, tcp_port: int | None = None, active: bool = True) -> Target:
    """Where a request with this gateway cookie (or a TCP port's bearer token) goes, or
    why it may not. `tcp_port`: a tunnel to that port of the machine. `active`: traffic
    to record for idle reaping (`vms.activity`)."""
    if parse_host(host) is None:
        raise Refused(404, "No machine is served at this address.")
    if not cookie:
        raise Refused(403, "Open this machine from the platform: only its owner can enter.")
    try:
        ticket = signing.loads(cookie, salt=_COOKIE_SALT)
    except signing.BadSignature as error:
        raise Refused(403, "Open this machine from the platform: only its owner can enter.") from error
    target = _admit(host=host, ticket=ticket, tcp_port=tcp_port)
    if active and "a" not in ticket:
        activity.touch(user_id=target.user_id, lab_id=target.lab_id)
    return target


def _admit(*, host: str, ticket: dict, tcp_port: int | None = None) -> Target:
    parsed = parse_host(host)
    if parsed is None:
        raise Refused(404, "No machine is served at this address.")
    name, port_in_host = parsed
    row = credentials.cache.get(
        ("gateway-machine", name),
        lambda: (
            VMSession.objects.filter(gateway_name=name)
            .values_list("id", "user_id", "lab_id", "status", "connection", "expires_at")
            .first()
        ),
        user_id=lambda found: found[1],
    )
    if row is None:
        raise Refused(404, "No machine is served at this address.")
    session_id, user_id, lab_id, status, connection, expires_at = row
    if status != VMStatus.RUNNING or expires_at <= timezone.now():
        raise Refused(410, "This machine has stopped.")
    entries = connection.get("ports", [])
    http_ports = [entry["port"] for entry in entries if entry.get("protocol") == "http"]
    if tcp_port is not None:
        # Any pass of the machine's owner opens its TCP ports: the cookie of an HTTP
        # origin, or the port's own bearer token.
        port, allowed = tcp_port, [entry["port"] for entry in entries if entry.get("protocol") != "http"]
        matches = ticket.get("p") in http_ports or ticket.get("p") == tcp_port
    else:
        port, allowed = (http_ports[0] if port_in_host is None and http_ports else port_in_host), http_ports
        matches = ticket.get("p") == port
    staff_access = ticket.get("a")
    holder = ticket.get("u")
    if str(session_id) != ticket.get("s") or not matches:
        raise Refused(403, "Open this machine from the platform: only its owner can enter.")
    if staff_access is None and holder != user_id:
        raise Refused(403, "Open this machine from the platform: only its owner can enter.")
    if staff_access is not None and not _staff_may_enter(
        access=staff_access, staff_id=holder, session_id=session_id
    ):
        raise Refused(403, "This staff access is no longer allowed.")
    if port not in allowed or not connection.get("upstream"):
        raise Refused(404, "No machine is served at this address.")
    if not _credential_live(user_id=holder, credential=ticket.get("c", "")):
        raise Refused(403, "You are signed out: sign in on the platform and open the machine again.")
    return Target(
        host=connection["upstream"],
        port=port,
        origin=origin(name=name, port=port_in_host),
        lab_id=lab_id,
        user_id=user_id,
    )


def _staff_may_enter(*, access: int, staff_id: int, session_id) -> bool:
    """Read on every request, uncached: staff entries are rare, and a permission taken
    away (directly or through a group) notifies nothing the credential cache hears."""
    found = (
        MachineAccess.objects.filter(pk=access, session_id=session_id, staff_id=staff_id)
        .select_related("staff")
        .first()
    )
    staff = found and found.staff
    return bool(staff and staff.is_active and staff.is_staff and staff.has_perm("vms.enter_vmsession"))


def _credential_live(*, user_id: int, credential: str) -> bool:
    def load() -> int | None:
        kind, _, digest = credential.partition(":")
        if kind == "s":
            alive = UserSession.objects.filter(
                key_hash=digest, user_id=user_id, ended_at__isnull=True, user__is_active=True
            ).exists()
        elif kind == "t":
            keys = Token.objects.filter(user_id=user_id, user__is_active=True).values_list("key", flat=True)
            alive = any(hashlib.sha256(key.encode()).hexdigest() == digest for key in keys)
        else:
            alive = False
        return user_id if alive else None

    key = ("gateway", user_id, credential)
    return credentials.cache.get(key, load, user_id=lambda found: found) is not None

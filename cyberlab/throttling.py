"""API rate limits: one DRF throttle over `cyberlab.ratelimit`, and the middleware that
reports them (`RateLimit-*` headers), takes back requests that must not count, and puts
the admin's login form under the login limit.

Every API request counts against `user` (signed in, per user) or `anon` (per client IP).
A view that names a `throttle_scope` counts against that scope too, in the same Lua call:

- `login`: per client IP and per username (the API login, the token endpoint and
  `/admin/login/` share these buckets);
- `register`: per client IP;
- `flag`: per learner, but only wrong answers stay counted. The slot is taken before the
  view runs, so fifty concurrent guesses still cannot exceed the limit, and given back
  after any answer that is not a wrong verdict (right, already solved, a 4xx, an error);
- `vm_start`: per learner, but only requests that started a machine stay counted (a 202
  from the start or reset view); a start that returned the live machine (200) or was
  refused gives its slot back, taken and returned the same way as `flag`;
- any other scope: per user (per client IP when signed out).

Rates come from `settings.THROTTLE_RATES` ("10/min", "100/hour", "5/30s"; empty or
"none" for no limit). Redis down: every request is admitted (see `cyberlab.ratelimit`).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.urls import NoReverseMatch, reverse
from rest_framework.throttling import BaseThrottle

from cyberlab import metrics, ratelimit
from cyberlab.ratelimit import Bucket, Decision, Rate, Usage

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*$")
# Where the throttle leaves its decision for the middleware: the WSGI/ASGI environment,
# which DRF's request and Django's share.
_PENDING = "cyberlab.ratelimit"
# Usernames are matched case-insensitively at login, so their buckets are too; the cap
# keeps a hostile "username" from becoming a huge Redis key.
_USERNAME_KEY_LENGTH = 150


@functools.lru_cache(maxsize=64)
def parse_rate(text: str | None) -> Rate | None:
    """ "10/min" -> Rate(10, 60.0); "5/30s" -> Rate(5, 30.0); "" or "none" -> None."""
    if text is None or text.strip().lower() in {"", "none", "off"}:
        return None
    match = _RATE.match(text.lower())
    if not match or match.group(3)[0] not in _UNITS:
        raise ImproperlyConfigured(f"Invalid throttle rate {text!r}: expected e.g. '10/min' or '5/30s'.")
    limit, multiplier, unit = int(match.group(1)), int(match.group(2) or 1), match.group(3)[0]
    return Rate(limit=limit, window=float(multiplier * _UNITS[unit]))


def scope_rate(scope: str) -> Rate | None:
    rates = settings.THROTTLE_RATES
    if scope not in rates:
        raise ImproperlyConfigured(f"No rate for throttle scope {scope!r}: add it to THROTTLE_RATES.")
    return parse_rate(rates[scope])


def client_address(request: HttpRequest) -> str | None:
    """The client's IP address, trusting `X-Forwarded-For` only for `NUM_PROXIES` hops.

    Each trusted proxy appends the address it saw, so the client is the entry
    `NUM_PROXIES` from the right; anything further left is whatever the client sent.
    None when that entry is not an IP address.
    """
    address = request.META.get("REMOTE_ADDR", "") or ""
    proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",")]
        address = hops[-min(proxies, len(hops))]
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)


def client_ip(request: HttpRequest) -> str:
    """The client's address as a rate-limit identity.

    IPv6 clients are grouped by /64, the block one subscriber usually holds, so rotating
    addresses inside it does not buy fresh limits.
    """
    address = client_address(request)
    if address is None:
        return "unknown"
    if ":" in address:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


def login_buckets(request: HttpRequest, username: object) -> list[Bucket]:
    """The login scope's buckets: the client IP, and the username when one was sent."""
    rate = scope_rate("login")
    if rate is None:
        return []
    buckets = [Bucket(ratelimit.key(scope="login", ident=f"ip:{client_ip(request)}"), rate)]
    if isinstance(username, str) and username.strip():
        name = username.strip().casefold()[:_USERNAME_KEY_LENGTH]
        buckets.append(Bucket(ratelimit.key(scope="login", ident=f"user:{name}"), rate))
    return buckets


def _is_wrong_flag_verdict(response: HttpResponse) -> bool:
    # The verdict as API.md gives it: `{correct, already_solved, ...}`. An answer to a flag
    # already solved guesses nothing, so it does not count either.
    data = getattr(response, "data", None)
    return (
        response.status_code == 200
        and isinstance(data, dict)
        and data.get("correct") is False
        and not data.get("already_solved")
    )


def _started_a_machine(response: HttpResponse) -> bool:
    # The machine views answer 202 when they created a machine (a start or a reset) and
    # 200 when a start found the learner's live machine, which costs no container.
    return response.status_code == 202


# Scopes that count only some outcomes: the predicate says whether a response counts.
COUNTS_ONLY: dict[str, Callable[[HttpResponse], bool]] = {
    "flag": _is_wrong_flag_verdict,
    "vm_start": _started_a_machine,
}


@dataclass
class _Pending:
    """What the throttle decided for one request, for the middleware to finish."""

    decision: Decision
    scope_buckets: dict[str, list[Bucket]]


class RateLimitThrottle(BaseThrottle):
    """The `anon`/`user` limit plus the view's `throttle_scope`, decided in one Redis call."""

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        user = request.user
        signed_in = bool(user and user.is_authenticated)
        ident = str(user.pk) if signed_in else client_ip(request)
        buckets: list[Bucket] = []
        general = "user" if signed_in else "anon"
        general_rate = scope_rate(general)
        if general_rate is not None:
            buckets.append(Bucket(ratelimit.key(scope=general, ident=ident), general_rate))
        scope_buckets: dict[str, list[Bucket]] = {}
        scope = getattr(view, "throttle_scope", None)
        if scope:
            scope_buckets[scope] = self._scope_buckets(scope, request, ident)
            buckets += scope_buckets[scope]
        decision = ratelimit.hit(buckets)
        if decision is None:
            return True
        request.META[_PENDING] = _Pending(decision=decision, scope_buckets=scope_buckets)
        self._wait = decision.retry_after
        if not decision.admitted:
            full = {usage.bucket.key for usage in decision.usages if usage.remaining == 0}
            own = {bucket.key for bucket in scope_buckets.get(scope, [])}
            metrics.RATE_LIMITED.labels(scope if own & full else general).inc()
        return decision.admitted

    def wait(self) -> float | None:
        return self._wait

    @staticmethod
    def _scope_buckets(scope: str, request, ident: str) -> list[Bucket]:
        if scope == "login":
            return login_buckets(request, _posted_username(request))
        rate = scope_rate(scope)
        if rate is None:
            return []
        if scope == "register":
            ident = client_ip(request)
        return [Bucket(ratelimit.key(scope=scope, ident=ident), rate)]


def refused_only_by(request: HttpRequest, scope: str) -> bool:
    """True when this request was refused by the buckets of `scope` alone: every other
    limit it counts against still had room."""
    pending = request.META.get(_PENDING)
    if pending is None or pending.decision.admitted:
        return False
    own = {bucket.key for bucket in pending.scope_buckets.get(scope, [])}
    full = {usage.bucket.key for usage in pending.decision.usages if usage.remaining == 0}
    return bool(full) and full <= own


def _posted_username(request) -> object:
    data = request.data
    return data.get("username") if hasattr(data, "get") else None


def _headers(response: HttpResponse, usages: list[Usage]) -> None:
    if not usages:
        return
    # The bucket closest to refusing is the one the client has to respect.
    usage = min(usages, key=lambda u: (u.remaining, -u.reset))
    response["RateLimit-Limit"] = str(usage.bucket.rate.limit)
    response["RateLimit-Remaining"] = str(usage.remaining)
    response["RateLimit-Reset"] = str(ratelimit.reset_seconds(usage))


def _finish(pending: _Pending, response: HttpResponse) -> None:
    refunded: set[str] = set()
    if pending.decision.admitted:
        for scope, buckets in pending.scope_buckets.items():
            counts = COUNTS_ONLY.get(scope)
            if counts is not None and buckets and not counts(response):
                ratelimit.refund(decision=pending.decision, buckets=buckets)
                refunded.update(b.key for b in buckets)
    usages = [
        ratelimit.usage_after_refund(u) if u.bucket.key in refunded else u for u in pending.decision.usages
    ]
    _headers(response, usages)


class RateLimitMiddleware:
    """Finishes the throttle's decisions and limits POSTs to the admin login form."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self._admin_login_path: str | None = None

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path == self.admin_login_path():
            refused = self._limit_admin_login(request)
            if refused is not None:
                return refused
        response = self.get_response(request)
        pending = request.META.get(_PENDING)
        if pending is not None:
            _finish(pending, response)
        return response

    def admin_login_path(self) -> str:
        if self._admin_login_path is None:
            try:
                self._admin_login_path = reverse("admin:login")
            except NoReverseMatch:
                self._admin_login_path = ""
        return self._admin_login_path

    @staticmethod
    def _limit_admin_login(request: HttpRequest) -> HttpResponse | None:
        buckets = login_buckets(request, request.POST.get("username"))
        decision = ratelimit.hit(buckets)
        if decision is None:
            return None
        request.META[_PENDING] = _Pending(decision=decision, scope_buckets={})
        if decision.admitted:
            return None
        wait = math.ceil(decision.retry_after)
        response = HttpResponse(
            f"Too many login attempts. Try again in {wait} seconds.\n",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(wait)
        _headers(response, list(decision.usages))
        return response

"""The stream's place in the API schema.

The streams themselves are answered by the ASGI application in front of Django
(cyberlab.asgi); a request that reaches these views came through a server that is not
it (a plain WSGI server, the test client), and is told so.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from cyberlab.api import error_responses

_STREAM_DESCRIPTION = """Server-sent events (`text/event-stream`). Every event has an `id`
(`{my position}_{broadcast position}`: send it back as `Last-Event-ID` to resume), an
`event` name and a JSON `data`:

- `machine`: my machine's new state -- `session_id`, `lab_id`, `status` (`provisioning`,
  `running`, `stopping`, `stopped`, `failed`), `reason` (`user`, `expired`, `idle`,
  `admin`, `failed`, `reset`, or why it failed), `connection` (when running),
  `expires_at`, `renewals_left`, `can_extend`;
- `machine.expiring`: `session_id`, `lab_id`, `expires_at`, `renewals_left`,
  `can_extend`, `reason` (`lifetime` or `idle`), `final` (the last warning);
- `solve`: my solve -- `solve_id`, `points`, `lab_id`, `flag_id`;
- `first_blood`: a flag's first solve, for everyone -- `flag_id`, `lab_id`, `lab_title`,
  `user_id`, `display_name`;
- `leaderboard`: the board moved -- `top` (the top ten); at most one per
  `EVENTS_LEADERBOARD_INTERVAL`, live only (not replayed);
- `announcement`: from staff -- `id`, `title`, `body_html`, `course_id` (null: everyone);
- `resync`: events may have been missed (Redis was away, the replay window passed):
  refetch state.

A comment line arrives every `EVENTS_HEARTBEAT` seconds; `retry:` on connect advises the
reconnect delay. A learner keeps at most `EVENTS_MAX_STREAMS_PER_USER` streams open: a new
one closes the oldest. Revoking the session or rotating the token ends the stream."""


class StreamElsewhere(APIException):
    status_code = 503
    default_detail = "The event stream is served by the ASGI server (scripts/serve.sh), not by this one."
    default_code = "stream_unavailable"


_LAST_EVENT_ID = OpenApiParameter(
    "Last-Event-ID", OpenApiTypes.STR, OpenApiParameter.HEADER, description="Resume after this event."
)


class EventStreamApi(APIView):
    @extend_schema(
        summary="My live events",
        description=_STREAM_DESCRIPTION,
        parameters=[_LAST_EVENT_ID],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="The stream."),
            **error_responses(403),
        },
    )
    def get(self, request):
        raise StreamElsewhere


class PublicEventStreamApi(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        summary="The board's live events, for public screens",
        description="`leaderboard` and `first_blood` only, anonymously, when LEADERBOARD_PUBLIC is on.",
        parameters=[_LAST_EVENT_ID],
        responses={
            (200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description="The stream."),
            **error_responses(404),
        },
    )
    def get(self, request):
        raise StreamElsewhere

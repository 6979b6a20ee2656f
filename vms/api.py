"""The machine endpoints: thin views over vms.services and vms.selectors."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab.api import Pagination, error_responses
from cyberlab.throttling import refused_only_by
from vms import activity, selectors, services
from vms.errors import MachineNotFound
from vms.models import StopReason
from vms.serializers import (
    MachineStateSerializer,
    StaffAccessRequestSerializer,
    StaffAccessSerializer,
    StaffMachineStateSerializer,
)

# Every machine endpoint may answer these: not signed in (a 403, since the session
# authenticator asks for no credentials; a missing CSRF token too), and rate limited.
_ERRORS = (403, 429)
# What a start answers besides: the lab or its machine not found, the learner's machine
# limit, the engine, the queue or machines switched off.
_START_ERRORS = error_responses(*_ERRORS, 404, 422, 503)


class CanViewMachines(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("vms.view_vmsession"))


class CanStopMachines(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("vms.stop_vmsession"))


class CanEnterMachines(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("vms.enter_vmsession"))


class LabMachineApi(APIView):
    """Start (POST), status (GET) and stop (DELETE) of my machine for a lab."""

    permission_classes = [IsAuthenticated]

    @property
    def throttle_scope(self) -> str | None:
        # Only starting is limited by the start scope; status polls are not starts.
        return "vm_start" if self.request.method == "POST" else None

    def handle_exception(self, exc):
        # A start that would only return the live machine creates nothing: the start limit
        # being spent is no reason to refuse it (any other limit still is).
        request = self.request
        if isinstance(exc, Throttled) and request.method == "POST" and refused_only_by(request, "vm_start"):
            machine = selectors.vm_live_state_for_user(user_id=request.user.pk, lab_id=self.kwargs["lab_id"])
            if machine is not None:
                return Response(MachineStateSerializer(machine, context={"request": request}).data)
        return super().handle_exception(exc)

    @extend_schema(
        request=None,
        responses={
            200: MachineStateSerializer,
            202: MachineStateSerializer,
            **_START_ERRORS,
            **error_responses(409),
        },
    )
    def post(self, request, lab_id: int):
        lab = selectors.vm_lab_for_start(user=request.user, lab_id=lab_id)
        result = services.vm_start(user=request.user, lab=lab)
        code = status.HTTP_202_ACCEPTED if result.created else status.HTTP_200_OK
        return Response(MachineStateSerializer(result.state, context={"request": request}).data, status=code)

    @extend_schema(responses={200: MachineStateSerializer, **error_responses(*_ERRORS, 404)})
    def get(self, request, lab_id: int):
        machine = selectors.vm_state_for_user(user_id=request.user.pk, lab_id=lab_id)
        if machine is None:
            raise MachineNotFound()
        return Response(MachineStateSerializer(machine, context={"request": request}).data)

    @extend_schema(responses={202: MachineStateSerializer, **error_responses(*_ERRORS, 404)})
    def delete(self, request, lab_id: int):
        machine = services.vm_stop(user=request.user, lab_id=lab_id)
        return Response(
            MachineStateSerializer(machine, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class LabMachineExtendApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        request=None, responses={200: MachineStateSerializer, **error_responses(*_ERRORS, 404, 409)}
    )
    def post(self, request, lab_id: int):
        machine = services.vm_extend(user=request.user, lab_id=lab_id)
        return Response(MachineStateSerializer(machine, context={"request": request}).data)


class LabMachineResetApi(APIView):
    permission_classes = [IsAuthenticated]
    throttle_scope = "vm_start"

    @extend_schema(request=None, responses={202: MachineStateSerializer, **_START_ERRORS})
    def post(self, request, lab_id: int):
        lab = selectors.vm_lab_for_start(user=request.user, lab_id=lab_id)
        result = services.vm_reset(user=request.user, lab=lab)
        return Response(
            MachineStateSerializer(result.state, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class MyMachinesApi(APIView):
    permission_classes = [IsAuthenticated]
    pagination_class = Pagination

    @extend_schema(responses={200: MachineStateSerializer(many=True), **error_responses(*_ERRORS, 400)})
    def get(self, request):
        paginator = self.pagination_class()
        machines = selectors.vm_states_for_user(user_id=request.user.pk)
        page = paginator.paginate_queryset(machines, request, view=self)
        return paginator.get_paginated_response(
            MachineStateSerializer(page, many=True, context={"request": request}).data
        )


class MyMachineApi(APIView):
    """One of my machines by its session id; another learner's id is not found."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: MachineStateSerializer, **error_responses(*_ERRORS, 404)})
    def get(self, request, session_id: uuid.UUID):
        session = selectors.vm_session_for_user(user=request.user, session_id=session_id)
        machine = selectors.vm_state_for_user(user_id=request.user.pk, lab_id=session.lab_id)
        if machine is None or machine.session_id != str(session.pk):
            raise MachineNotFound(detail="This machine is no longer live.")
        return Response(MachineStateSerializer(machine, context={"request": request}).data)

    @extend_schema(responses={202: MachineStateSerializer, **error_responses(*_ERRORS, 404)})
    def delete(self, request, session_id: uuid.UUID):
        machine = services.vm_stop_session(session_id=session_id, reason=StopReason.USER, user=request.user)
        return Response(
            MachineStateSerializer(machine, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class AdminMachinesApi(APIView):
    """Staff: every live machine, soonest-expiring first."""

    permission_classes = [CanViewMachines]
    pagination_class = Pagination

    @extend_schema(responses={200: StaffMachineStateSerializer(many=True), **error_responses(*_ERRORS, 400)})
    def get(self, request):
        paginator = self.pagination_class()
        page = paginator.paginate_fetched(
            lambda limit, offset: selectors.vm_live_machines(limit=limit, offset=offset), request
        )
        seen = activity.last_seen(machines=[(machine.user_id, machine.lab_id) for machine in page])
        return paginator.get_paginated_response(
            StaffMachineStateSerializer(page, many=True, context={"last_activity": seen}).data
        )


class AdminMachineApi(APIView):
    permission_classes = [CanStopMachines]

    @extend_schema(responses={202: StaffMachineStateSerializer, **error_responses(*_ERRORS, 404)})
    def delete(self, request, session_id: uuid.UUID):
        machine = services.vm_stop_session(session_id=session_id, reason=StopReason.ADMIN)
        return Response(StaffMachineStateSerializer(machine).data, status=status.HTTP_202_ACCEPTED)


class AdminMachineAccessApi(APIView):
    """Staff with `vms.enter_vmsession`: entry links to a learner's running machine, made
    for an access recorded with its reason."""

    permission_classes = [CanEnterMachines]

    @extend_schema(
        request=StaffAccessRequestSerializer,
        responses={201: StaffAccessSerializer, **error_responses(*_ERRORS, 400, 404, 409)},
    )
    def post(self, request, session_id: uuid.UUID):
        body = StaffAccessRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        access = services.vm_staff_access(
            staff=request.user, session_id=session_id, reason=body.validated_data["reason"]
        )
        return Response(
            StaffAccessSerializer(access, context={"request": request}).data, status=status.HTTP_201_CREATED
        )

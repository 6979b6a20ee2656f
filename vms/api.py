"""The machine endpoints: thin views over vms.services and vms.selectors."""

from __future__ import annotations

import uuid

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from cyberlab.api import Pagination
from cyberlab.throttling import refused_only_by
from vms import selectors, services
from vms.errors import MachineNotFound
from vms.models import StopReason
from vms.serializers import MachineStateSerializer, StaffMachineStateSerializer


class CanViewMachines(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("vms.view_vmsession"))


class CanStopMachines(BasePermission):
    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff and user.has_perm("vms.stop_vmsession"))


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
        if (
            isinstance(exc, Throttled)
            and request.method == "POST"
            and refused_only_by(request._request, "vm_start")
        ):
            fields = selectors.vm_live_state_for_user(user_id=request.user.pk, lab_id=self.kwargs["lab_id"])
            if fields is not None:
                return Response(selectors.state_view(fields))
        return super().handle_exception(exc)

    @extend_schema(request=None, responses={200: MachineStateSerializer, 202: MachineStateSerializer})
    def post(self, request, lab_id: int):
        lab = selectors.vm_lab_for_start(user=request.user, lab_id=lab_id)
        result = services.vm_start(user=request.user, lab=lab)
        code = status.HTTP_202_ACCEPTED if result.created else status.HTTP_200_OK
        return Response(selectors.state_view(result.state), status=code)

    @extend_schema(responses={200: MachineStateSerializer})
    def get(self, request, lab_id: int):
        fields = selectors.vm_state_for_user(user_id=request.user.pk, lab_id=lab_id)
        if fields is None:
            raise MachineNotFound()
        return Response(selectors.state_view(fields))

    @extend_schema(responses={202: MachineStateSerializer})
    def delete(self, request, lab_id: int):
        fields = services.vm_stop(user=request.user, lab_id=lab_id)
        return Response(selectors.state_view(fields), status=status.HTTP_202_ACCEPTED)


class LabMachineExtendApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={200: MachineStateSerializer})
    def post(self, request, lab_id: int):
        fields = services.vm_extend(user=request.user, lab_id=lab_id)
        return Response(selectors.state_view(fields))


class LabMachineResetApi(APIView):
    permission_classes = [IsAuthenticated]
    throttle_scope = "vm_start"

    @extend_schema(request=None, responses={202: MachineStateSerializer})
    def post(self, request, lab_id: int):
        lab = selectors.vm_lab_for_start(user=request.user, lab_id=lab_id)
        result = services.vm_reset(user=request.user, lab=lab)
        return Response(selectors.state_view(result.state), status=status.HTTP_202_ACCEPTED)


class MyMachinesApi(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: MachineStateSerializer(many=True)})
    def get(self, request):
        paginator = Pagination()
        states = selectors.vm_states_for_user(user_id=request.user.pk)
        page = paginator.paginate_queryset(states, request, view=self)
        return paginator.get_paginated_response([selectors.state_view(fields) for fields in page])


class MyMachineApi(APIView):
    """One of my machines by its session id; another learner's id is not found."""

    permission_classes = [IsAuthenticated]

    @extend_schema(responses={200: MachineStateSerializer})
    def get(self, request, session_id: uuid.UUID):
        session = selectors.vm_session_for_user(user=request.user, session_id=session_id)
        fields = selectors.vm_state_for_user(user_id=request.user.pk, lab_id=session.lab_id)
        if fields is None or fields.get("session_id") != str(session.pk):
            raise MachineNotFound(detail="This machine is no longer live.")
        return Response(selectors.state_view(fields))

    @extend_schema(responses={202: MachineStateSerializer})
    def delete(self, request, session_id: uuid.UUID):
        fields = services.vm_stop_session(session_id=session_id, reason=StopReason.USER, user=request.user)
        return Response(selectors.state_view(fields), status=status.HTTP_202_ACCEPTED)


class AdminMachinesApi(APIView):
    """Staff: every live machine, soonest-expiring first."""

    permission_classes = [CanViewMachines]

    @extend_schema(responses={200: StaffMachineStateSerializer(many=True)})
    def get(self, request):
        paginator = Pagination()
        page = paginator.paginate_queryset(selectors.vm_live_machines(), request, view=self)
        return paginator.get_paginated_response([selectors.state_view(fields, staff=True) for fields in page])


class AdminMachineApi(APIView):
    permission_classes = [CanStopMachines]

    @extend_schema(responses={202: StaffMachineStateSerializer})
    def delete(self, request, session_id: uuid.UUID):
        fields = services.vm_stop_session(session_id=session_id, reason=StopReason.ADMIN)
        return Response(selectors.state_view(fields, staff=True), status=status.HTTP_202_ACCEPTED)

"""Why a machine request was refused, as the API answers it: `{"detail", "code"}`."""

from __future__ import annotations

from rest_framework import exceptions, status

from cyberlab.api import Conflict, ServiceUnavailable


class MachinesDisabled(ServiceUnavailable):
    default_detail = "Lab machines are switched off on this platform."
    default_code = "vm_disabled"


class EngineUnavailable(ServiceUnavailable):
    default_detail = "The lab machine engine does not answer; try again shortly."
    default_code = "vm_engine_unavailable"


class LabHasNoMachine(exceptions.NotFound):
    default_detail = "This lab has no machine."
    default_code = "no_machine_template"


class MachineNotFound(exceptions.NotFound):
    default_detail = "You have no machine for this lab."
    default_code = "no_machine"


class MachineRefused(exceptions.APIException):
    """The lab's template asks for an image, capability or size this platform refuses."""

    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This lab's machine is not allowed on this platform."
    default_code = "machine_not_allowed"


class UserLimitReached(Conflict):
    default_detail = "You already have the most machines allowed at once; stop one first."
    default_code = "vm_user_limit"


class PlatformFull(exceptions.Throttled):
    default_detail = "Every lab machine slot is taken; try again in a few minutes."
    default_code = "vm_capacity"


class ExtendRefused(Conflict):
    default_detail = "This machine cannot be extended now."
    default_code = "vm_extend_refused"


class MachineNotRunning(Conflict):
    default_detail = "This machine is not running, so there is nothing to enter."
    default_code = "vm_not_running"

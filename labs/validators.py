"""Checks other apps add to what staff author here, so labs never imports them.

Dependencies point one way (`vms -> labs`), yet only the machines app knows which
images, capabilities and sizes this platform will start. It registers its policy here
from its AppConfig.ready(), and the machine template form in the admin runs every
registered check when staff save, so an author sees at once what the start would
refuse later.
"""

from __future__ import annotations

from collections.abc import Callable

from labs.models import MachineTemplate

# A check returns every problem it finds with the template, in words an author
# understands; an empty list means the check has nothing against it.
MachineTemplateCheck = Callable[[MachineTemplate], list[str]]

machine_template_checks: list[MachineTemplateCheck] = []


def register_machine_template_check(check: MachineTemplateCheck) -> MachineTemplateCheck:
    """Adds `check` to what a machine template must pass when staff save it (once)."""
    if check not in machine_template_checks:
        machine_template_checks.append(check)
    return check


def machine_template_problems(template: MachineTemplate) -> list[str]:
    """Every problem every registered check finds with `template`, in check order."""
    problems: list[str] = []
    for check in machine_template_checks:
        problems.extend(check(template))
    return problems

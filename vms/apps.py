from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"

    def ready(self) -> None:
        from labs.validators import register_machine_template_check
        from vms.policy import template_problems

        # Authors see the start policy when they save a template, not when a learner
        # clicks start; labs cannot import vms, so the policy is registered there.
        register_machine_template_check(template_problems)

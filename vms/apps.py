from django.apps import AppConfig


class VmsConfig(AppConfig):
    name = "vms"

    def ready(self) -> None:
        from cyberlab import nearcache
        from labs.validators import register_machine_template_check
        from vms import state
        from vms.policy import template_problems

        nearcache.track_prefix(*state.NEAR_CACHE_PREFIXES)

        # Authors see the start policy when they save a template, not when a learner
        # clicks start; labs cannot import vms, so the policy is registered there.
        register_machine_template_check(template_problems)

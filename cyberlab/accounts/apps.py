from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "cyberlab.accounts"
    label = "accounts"
    verbose_name = "Accounts"

    def ready(self) -> None:
        from cyberlab.accounts import signals  # noqa: F401

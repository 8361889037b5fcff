from django.apps import AppConfig


class AdsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "ads"

    def ready(self) -> None:
        from ads import services
        from consent.services import register_erasure_hook

        register_erasure_hook(services.erase_subject_data)

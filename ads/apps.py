from django.apps import AppConfig


class AdsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "ads"

    def ready(self) -> None:
        from ads import selectors, services
        from billing.services import register_entry_window_check
        from consent.selectors import register_export_contributor
        from consent.services import register_erasure_hook

        register_erasure_hook(services.erase_subject_data)
        register_export_contributor("ads", selectors.export_subject_data)
        register_entry_window_check(services.entry_window_open)

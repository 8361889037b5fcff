from django.apps import AppConfig


class BillingConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "billing"

    def ready(self) -> None:
        from billing import selectors
        from consent.selectors import register_export_contributor

        register_export_contributor("billing", selectors.export_subject_purchases)

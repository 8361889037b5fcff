"""The Celery application: `celery -A config worker` and `celery -A config beat`."""

import logging.config
import os
from typing import Any

from celery import Celery, signals

from config import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Tasks enqueued during a request carry its id; the worker's records show it.
signals.before_task_publish.connect(logs.carry_request_id, weak=False)
signals.task_prerun.connect(logs.adopt_request_id, weak=False)
signals.task_postrun.connect(logs.drop_request_id, weak=False)


@signals.setup_logging.connect(weak=False)
def _django_logging(loglevel: Any = None, **kwargs: Any) -> None:
    """Workers and beat log like the web processes (settings.LOGGING: JSON lines in
    production, the request id on every record) at the level given to Celery."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)

"""Ratchet's Airflow plugin: the "Models" view in the UI's navigation, its FastAPI app, and extra links.

Airflow imports every file of the plugins folder that `.airflowignore` leaves, under its bare file name;
this is the only one it imports (the rest are imported from here as `ratchet_airflow.*`).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from ratchet_airflow.links import LINKS, URL_PREFIX
from ratchet_airflow.web import app


class RatchetPlugin(AirflowPlugin):
    name = "ratchet"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Ratchet models and links"}]
    # Shown inside the UI (an iframe) at /plugin/ratchet-models; href is relative to the UI's base URL.
    external_views = [{"name": "Models", "href": f"{URL_PREFIX.lstrip('/')}/models/", "url_route": "ratchet-models",
                       "destination": "nav", "nav_top_level": True}]
    operator_extra_links = LINKS

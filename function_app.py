"""Assembles the Functions app: the ASGI API (which checks keys and Entra tokens by role itself),
the Event Grid webhook (guarded by an events key), the Event Grid trigger, the health route and
the reconciler's timer."""

import azure.functions as func

from functions.blob_events import blueprint
from functions.http_app import http_app, webhook_blueprint
from functions.reconcile import blueprint as reconcile_blueprint
from shared.runtime import settle_collector

app = func.AsgiFunctionApp(app=http_app, http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(blueprint)
app.register_functions(webhook_blueprint)
app.register_functions(reconcile_blueprint)

# The worker imports this module once, before any invocation: what exists now lives as long as it.
settle_collector()

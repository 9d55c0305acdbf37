"""The HTTP entry points: the API as one ASGI app, and the Event Grid webhook as its own function,
guarded by an events key.

Roles under the host (the app checks every credential itself, as when served directly; the host's
function keys grant nothing, as they cannot say which role a caller has nor carry an Entra token):

* ``http_app_func`` (registered by ``function_app.py``, route ``/{*route}``, auth level
  ``anonymous``): the API. The app admits ``READ_KEYS`` / ``API_KEYS`` keys (Key Vault references
  in Azure) and Entra tokens by role, and refuses an ``EVENTS_KEYS`` key there.
* ``events_webhook`` (route ``api/events``, POST and OPTIONS): a literal route, so the host sends
  the webhook here and not to the catch-all. The host does not check a key (auth level
  ``anonymous``); the app does, against ``EVENTS_KEYS`` (a Key Vault reference in Azure), so a
  function key of the API cannot post events and an events key can do nothing else.
* ``index_blob_event`` (``functions/blob_events.py``): the Event Grid trigger. Event Grid reaches
  it through the extension's endpoint with the ``eventgrid_extension`` system key (or, as the
  Bicep subscribes it, as an ``AzureFunction`` endpoint by resource ID, without any key).
"""

from __future__ import annotations

import azure.functions as func

from shared.http.app import create_app

#: Built at import; reads its settings (keys, Entra) on the first request.
http_app = create_app(hosted=True)

#: The core's clients, shared with the Event Grid trigger (one set per worker process).
services = http_app.state.services

webhook_blueprint = func.Blueprint()
_webhook_middleware = func.AsgiMiddleware(http_app)


@webhook_blueprint.function_name("events_webhook")
@webhook_blueprint.route(route="api/events", methods=["POST", "OPTIONS"], auth_level=func.AuthLevel.ANONYMOUS)
async def events_webhook(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    # The same ASGI app: its /api/events route checks the events key (require_events_key).
    response: func.HttpResponse = await _webhook_middleware.handle_async(req, context)
    return response

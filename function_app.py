"""Assembles the Functions app: the ASGI API plus the Event Grid trigger and health route."""

import azure.functions as func

from functions.blob_events import blueprint
from functions.http_app import http_app

app = func.AsgiFunctionApp(app=http_app, http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(blueprint)

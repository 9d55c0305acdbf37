"""What the Functions Python worker hands a trigger function for one event (tests, benchmarks).

The worker picks the binding by the parameter's annotation (azure-functions-python-worker,
``functions.py``): ``str`` or ``bytes``, on a binding without implicit output, takes the *generic*
binding, whose ``decode`` passes the data through as the host sent it (``bindings/generic.py``;
for Event Grid, the event's JSON text); any other annotation takes the converter azure-functions
registers for the binding type (``EventGridEventInConverter`` for ``eventGridTrigger``), which
decodes the same JSON. The worker itself cannot be installed here, so this applies the same rule.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

import azure.functions as func

EVENT_GRID_TRIGGER = "eventGridTrigger"


def trigger_argument(function: Callable[..., Any], payload: dict[str, Any], *, param: str = "event",
                     binding: str = EVENT_GRID_TRIGGER) -> Any:
    """The argument ``function``'s ``param`` receives for ``payload`` (one event, as JSON on the
    wire); ``function`` is the user function or the decorators' builder around it."""
    text = json.dumps(payload)
    builder = getattr(function, "_function", None)  # a blueprint's FunctionBuilder
    user = builder.get_user_function() if builder is not None else function
    pytype = typing.get_type_hints(user).get(param)
    converter = func.get_binding_registry().get(binding)
    if pytype in (str, bytes) and not (converter is not None and converter.has_implicit_output()):
        return text  # the generic binding: the JSON text, as the host sent it
    if converter is None:
        raise LookupError(f"azure-functions registers no converter for {binding!r}")
    return converter.decode(func.meta.Datum(text, "json"), trigger_metadata={})

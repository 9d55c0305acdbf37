"""What the Functions Python worker hands a trigger function for one event (tests, benchmarks).

The worker picks the binding by the parameter's annotation (azure-functions-python-worker,
``functions.py``): ``str`` or ``bytes``, on a binding without implicit output, takes the *generic*
binding, whose ``decode`` passes the data through as the host sent it (``bindings/generic.py``;
for Event Grid, the event's JSON text); any other annotation takes the converter azure-functions
registers for the binding type (``EventGridEventInConverter`` for ``eventGridTrigger``), which
decodes the same JSON. The worker itself cannot be installed here, so this applies the same rule.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable
from typing import Any

import azure.functions as func

EVENT_GRID_TRIGGER = "eventGridTrigger"


@functools.cache
def trigger_binding(function: Callable[..., Any], *, param: str = "event",
                    binding: str = EVENT_GRID_TRIGGER) -> Callable[[str], Any]:
    """How the worker turns the host's JSON text for ``param`` into the argument: decided once,
    when it loads the function (``function``: the user function or the decorators' builder)."""
    builder = getattr(function, "_function", None)  # a blueprint's FunctionBuilder
    user = builder.get_user_function() if builder is not None else function
    pytype = typing.get_type_hints(user).get(param)
    converter = func.get_binding_registry().get(binding)
    if pytype in (str, bytes) and not (converter is not None and converter.has_implicit_output()):
        return _generic  # the generic binding: the JSON text, as the host sent it
    if converter is None:
        raise LookupError(f"azure-functions registers no converter for {binding!r}")
    return functools.partial(_converted, converter)


def _generic(text: str) -> str:
    return text


def _converted(converter: Any, text: str) -> Any:
    return converter.decode(func.meta.Datum(text, "json"), trigger_metadata={})


def trigger_argument(function: Callable[..., Any], payload: dict[str, Any], *, param: str = "event",
                     binding: str = EVENT_GRID_TRIGGER) -> Any:
    """The argument ``function``'s ``param`` receives for ``payload`` (one event, as JSON on the wire)."""
    return trigger_binding(function, param=param, binding=binding)(json.dumps(payload))

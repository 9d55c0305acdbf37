"""The public home of the Batch File Conventions' names (``shared.conventions.container_name``).

The rules live in the client package, ``batch_outputs.conventions`` (byte for byte the .NET
library's); this module keeps the documented import path for the server and its users (the names are
``shared.domain.conventions``'s).
"""

from shared.domain.conventions import *  # noqa: F403  (the same names, one list of them)
from shared.domain.conventions import __all__ as __all__

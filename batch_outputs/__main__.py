"""``python -m batch_outputs``: the ``batch-outputs`` command, where the console script is not on PATH."""

from .cli import main

main()

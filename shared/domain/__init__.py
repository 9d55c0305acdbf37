"""The rules of the problem, with no I/O: no Azure SDK, no FastAPI, no network, no clock reads
beyond what a caller passes in. Everything here is a pure function or a value."""

"""The HTTP API (SPEC §6): app factory, dependencies, response schemas, one router per resource."""

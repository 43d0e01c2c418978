"""meterflow's own OpenAPI 3.1 document, served at ``GET /openapi.json``.

The paths and methods come from the router's routes, so the document cannot drift from what is
served; each route's summary, parameters and response shape come from
:mod:`ingest.openapi.operations`, and a route without one is an error (a unit test holds it).
"""

"""`photoseek serve`: a local HTTP API and web page over the search library.

A thin shell (STYLE §9): FastAPI routers per resource, the engine handed in by `Depends`,
pydantic models as the documented schema, and every search going through the same library
functions as the CLI's. Safe by default: loopback only unless a token is set, files served by
catalog id only, uploads capped while they stream.
"""

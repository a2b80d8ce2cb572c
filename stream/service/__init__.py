"""The HTTP service: ``create_app`` (app.py) builds a FastAPI app that only includes routers, one per resource.

    service/app.py        create_app: middleware, error handlers, app.state, routers
    service/deps.py       dependencies that read request.app.state, and the protocols of what is put there
    service/guard.py      Host/Origin checks, the token and the body cap, before any handler runs
    service/server.py     uvicorn inside the service's own event loop
    service/serve.py      the one serve loop (one process or a cluster's controller)
    service/status.py     the API's JSON for a stream, and the readiness rule (no FastAPI in it)
    service/models.py     request/response models
    service/routers/      health, streams, previews, webrtc, model, watch, events, cluster

Another feature adds its endpoints as an ``APIRouter`` of its own (dependencies from ``deps``) and one entry
in ``create_app``'s list of routers.
"""

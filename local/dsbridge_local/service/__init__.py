"""The reference optimization service: a small FastAPI app that receives signed dsbridge callbacks.

Start it with ``python -m dsbridge_local.service --port P --db PATH`` (secrets in
``DSBRIDGE_SERVICE_SECRETS``, admin token in ``DSBRIDGE_SERVICE_ADMIN_TOKEN``) or build it
in-process with ``dsbridge_local.service.app.create_app``.
"""

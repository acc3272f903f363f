"""Traffic routers, one module per kind, chosen by ``platform.router.kind`` (``platforms.registry``)."""

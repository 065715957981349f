"""``relay serve``: the HTTP front door, one FastAPI app on uvicorn.

- :mod:`relay.api.app` builds the app (:func:`create_app`), holding one :class:`relay.Relay`
  in ``app.state.relay``;
- :mod:`relay.api.messages` the native ``/v1/messages`` routes, :mod:`relay.api.results`
  stats, devices and dead messages, :mod:`relay.api.keys` API keys (admin),
  :mod:`relay.api.events` the Server-Sent Events stream,
  :mod:`relay.api.health` ``/healthz``, ``/readyz`` and ``/metrics``,
  :mod:`relay.api.dropin` the SMSGateway24-compatible ``/getdata/`` front;
- :mod:`relay.api.auth` API keys on requests, :mod:`relay.api.errors` the one error shape,
  :mod:`relay.api.access` access logs and request metrics, :mod:`relay.api.docs` the
  OpenAPI document and ``/docs`` served without a CDN;
- :mod:`relay.api.server` runs it (``relay serve``): uvicorn with uvloop and httptools,
  one socket shared by ``--workers`` processes, graceful SIGTERM.

Every door calls the same validation and producer as the library (docs/design.md, invariant 9).
"""

"""The dashboard of ``relay serve`` (``/dashboard``): lanes, phones, throughput, latency, dead
letters, lookup and recent events in the browser, live.

Server-rendered shells (:mod:`relay.dashboard.pages`, ``templates/``) and a little plain
JavaScript (``assets/``) that reads the documented ``/v1`` routes; no build step, no framework,
nothing from a CDN. People log in with an API key (a session cookie, :mod:`relay.api.sessions`);
scripts use the same routes with ``Authorization: Bearer``.
"""

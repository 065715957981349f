"""The SMSGateway24-compatible front: relay answering the gateway's own API.

An integration written for the gateway (its PHP SDK, PHP curl/Guzzle examples, npm package,
WordPress plugin...) changes its base URL to relay's ``/getdata/`` and uses a relay API key
as its token; its messages then go through relay's producer, lanes, pacing, batching and
reconciler like any other. The modules, outside in:

- :mod:`relay.dropin.params`: a request's fields, merged from query, form and JSON;
- :mod:`relay.dropin.service`: auth and routing (``Dropin.handle``), errors as answers;
- :mod:`relay.dropin.messages` / :mod:`relay.dropin.sending`: send requests through
  ``Relay.send_many``; :mod:`relay.dropin.ids`: their integer ids and index;
- :mod:`relay.dropin.reading`: status, messages and devices from relay's own records;
- :mod:`relay.dropin.passthrough`: tags, contacts and newsletters sent on to the gateway;
- :mod:`relay.dropin.answers`, :mod:`relay.dropin.statuses`, :mod:`relay.dropin.dates`:
  the gateway's shapes, codes and date objects.

The HTTP route itself is ``relay.api.dropin.router``.
"""

from relay.dropin.service import Dropin, Outcome

__all__ = ["Dropin", "Outcome"]

"""Producing: every way in validates with :mod:`relay.produce.validation` and stores with
:mod:`relay.produce.producer` (one enqueue script); :mod:`relay.produce.schedule` moves
scheduled messages into their lanes when due."""

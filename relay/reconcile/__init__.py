"""Reconciling: finding submitted messages among the gateway's records and following each to
a final status (:mod:`relay.reconcile.reconciler`); :mod:`relay.reconcile.matching` is the
pure rule of "same message"."""

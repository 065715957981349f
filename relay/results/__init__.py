"""Results: what relay tells the world — the events stream, webhooks, stats, metrics and the
dead letters (rejected messages)."""

"""Business rules, one module per domain. Services flush; the caller commits."""

"""Blueprints by audience: auth, partner, admin, track, api (and health for probes)."""

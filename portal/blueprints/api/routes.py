"""API v1 routes."""

"""Click redirect routes."""

"""aiotflow package."""

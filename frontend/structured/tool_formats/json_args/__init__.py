"""Formats whose calls carry their arguments as a JSON object."""

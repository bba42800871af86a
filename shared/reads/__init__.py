"""Reads for the dashboard, sync management and health: queries in, plain dicts out."""

"""Mapping functions that specs point to for what a field-to-column mapping cannot say."""

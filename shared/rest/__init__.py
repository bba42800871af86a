"""Declarative REST sources: a spec file says how to read a source and where its records go."""

"""Development tooling, never deployed: the sandbox sources, the local host, synthetic data and
the mirror-versus-source comparison. `python -m shared.cli sandbox|serve|generate` reaches it from
a checkout of the repository; shared/ imports nothing from here (tests/unit/test_deployed_package.py)."""

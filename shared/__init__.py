"""The sync engine: settings, source access, FHIR transformers, store, sync and reads.

Only the blueprint modules may import ``azure.functions``; everything else is plain Python.
"""

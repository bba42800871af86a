"""Application services: the engine's use cases, each a function that takes the runtime.

Triggers (shared/blueprints), the local host and the CLI adapt their inputs — a queue message, a
timer tick, an HTTP request — to these calls and their results back; nothing here imports
azure.functions or reaches for a global runtime. Tests build a runtime and pass it in, with any
collaborator they want to replace (``run=`` for the reconcile itself).
"""

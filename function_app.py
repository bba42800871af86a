"""The Azure Functions app (Python v2 programming model): builds the app, registers blueprints.

Import-safe: importing this module reads no settings, opens no connection and starts nothing,
so `func start`, the local host and tests can all load it. Each blueprint in shared.blueprints
adapts triggers to the engine; that package is the only one that imports azure.functions.
"""
from __future__ import annotations

import azure.functions as func

from shared.blueprints import BLUEPRINTS

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)

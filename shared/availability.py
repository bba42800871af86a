"""What "temporarily unavailable" means: storage or configuration that did not answer.

Callers answer those with a 503 and Retry-After (the caller tries again later); anything else
is a bug and is raised, so that the host answers 500 and logs its traceback.
"""
from __future__ import annotations

from azure.core.exceptions import AzureError
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from shared.settings import SettingsError


def is_unavailable(exc: BaseException) -> bool:
    """The database unreachable or gone (not a statement it refused: a DataError or an
    IntegrityError is a bug), an exhausted pool, the queue service, the network, a tenants
    configuration that failed to load."""
    return isinstance(exc, (OperationalError, InterfaceError, PoolTimeout, AzureError, OSError, SettingsError))

"""Queue-triggered functions: apply one change; run one reconcile step and its continuation.

Each adapts the trigger — the message's text, its dequeue count — to an application service
(shared.service), with the process's runtime.
"""
from __future__ import annotations

import azure.functions as func

from shared.bootstrap import runtime
from shared.queues.messages import CHANGES_QUEUE, MAX_DEQUEUE_COUNT, RECONCILE_QUEUE
from shared.service.changes import apply_change_message as apply_change_text
from shared.service.reconciles import reconcile_step as run_reconcile_step

bp = func.Blueprint()


@bp.queue_trigger(arg_name="msg", queue_name=CHANGES_QUEUE, connection="AzureWebJobsStorage")
async def apply_change_message(msg: func.QueueMessage) -> None:
    await apply_change_text(runtime(), msg.get_body().decode())


@bp.queue_trigger(arg_name="msg", queue_name=RECONCILE_QUEUE, connection="AzureWebJobsStorage")
async def reconcile_step(msg: func.QueueMessage) -> None:
    count = msg.dequeue_count or 1
    await run_reconcile_step(runtime(), msg.get_body().decode(), redelivered=count > 1,
                             last_attempt=count >= MAX_DEQUEUE_COUNT)

"""The timer that fans out reconciles: one reconcile message per due (tenant, kind), on the app
setting %SYNC_FANOUT_SCHEDULE% (shared.service.reconciles.fan_out says what is due)."""
from __future__ import annotations

import azure.functions as func

from shared.bootstrap import runtime
from shared.service.reconciles import fan_out

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule="%SYNC_FANOUT_SCHEDULE%", run_on_startup=False, use_monitor=True)
def reconcile_fan_out(timer: func.TimerRequest) -> None:
    fan_out(runtime())

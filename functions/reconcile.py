"""The reconciler's timer (``RECONCILE_SCHEDULE``, NCRONTAB with seconds): repairs what no
event announces. The host resolves ``%RECONCILE_SCHEDULE%`` from the app settings, and runs a
timer function on one instance at a time (it holds a singleton lock in AzureWebJobsStorage), so
runs never overlap however far the app scales out."""

from __future__ import annotations

import logging

import azure.functions as func

from .http_app import services

log = logging.getLogger(__name__)
blueprint = func.Blueprint()


@blueprint.function_name("reconcile")
@blueprint.timer_trigger(schedule="%RECONCILE_SCHEDULE%", arg_name="timer", run_on_startup=False, use_monitor=True)
async def reconcile(timer: func.TimerRequest) -> None:
    if timer.past_due:
        log.info("reconcile run is past due")
    service = await services.get()
    await service.reconciler().run()  # logs its own report

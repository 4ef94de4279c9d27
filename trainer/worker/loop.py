"""``ranktune worker``: claim → proxy fine-tune → heartbeats → complete or fail, until told to stop.

SIGTERM (or Ctrl-C) stops training within one step, reports a retryable failure ("preempted") and
exits 0. Results go through the on-disk spool first, so a crash or an unreachable server never
loses a finished trial: it is resent on the next start.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ranktune.search.errors import RanktuneError
from ranktune.search.schedule import RankSchedule
from ranktune.trainer.worker.client import LeaseClient, ServerRejected
from ranktune.trainer.worker.spool import PendingAdapter, PendingState, Spool

log = logging.getLogger("ranktune.worker")


@dataclass
class WorkerOptions:
    server: str
    token: str | None = None
    name: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    device: str = "auto"
    max_trials: int | None = None
    once: bool = False
    spool_dir: Path | None = None
    max_poll_s: float = 10.0


class Heartbeat(threading.Thread):
    """Sends progress and measurements every interval; remembers what the server answered."""

    def __init__(self, client: LeaseClient, job: dict[str, Any]) -> None:
        super().__init__(name=f"heartbeat-{job['lease_id']}", daemon=True)
        self.client = client
        self.job = job
        self.interval = float(job.get("heartbeat_interval_s", 10.0))
        self.step = 0
        self.pending: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.resize_to: dict[str, Any] | None = None
        self.site_stats: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def record(self, measurement: dict[str, Any], site_stats: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.pending.append(measurement)
            if site_stats is not None:
                self.site_stats = site_stats

    def beat(self) -> None:
        with self._lock:
            measurements, self.pending = self.pending, []
            stats, self.site_stats = self.site_stats, None
        body: dict[str, Any] = {
            "attempt": self.job["attempt"],
            "step": self.step,
            "total_steps": self.job["proxy"]["steps"],
            "measurements": measurements,
        }
        if stats is not None:
            body["site_stats"] = stats
        try:
            answer = self.client.heartbeat(self.job["lease_id"], body)
        except ServerRejected as e:
            self.stop_reason = f"lease lost ({e.status})"
            return
        except Exception as e:  # a missed beat is retried next interval
            log.warning("action=heartbeat_failed trial=%s error=%r", self.job["trial_id"], e)
            with self._lock:
                self.pending = measurements + self.pending
            return
        if answer.get("action") == "stop":
            self.stop_reason = "stopped by server"
        elif answer.get("action") == "resize" and answer.get("schedule"):
            self.resize_to = answer["schedule"]

    def run(self) -> None:
        while not self._done.wait(self.interval):
            self.beat()

    def finish(self) -> None:
        self._done.set()


def dynamic_steps(job: dict[str, Any]) -> tuple[int, ...]:
    """The steps at which a dynamic-mode trial reports its adapters ("dynamic": {"at": fractions})."""
    dynamic = job.get("dynamic") or {}
    steps = int(job["proxy"]["steps"])
    found = {min(steps - 1, max(1, round(f * steps))) for f in dynamic.get("at", [])}
    return tuple(sorted(s for s in found if 1 <= s < steps))


class Worker:
    def __init__(self, options: WorkerOptions) -> None:
        from ranktune.trainer.cache import cache_dir

        self.options = options
        self.preempted = False
        self.client = LeaseClient(options.server, options.token, should_give_up=lambda: self.preempted)
        self.spool = Spool(options.spool_dir or cache_dir() / "spool" / options.name)
        self._tasks: dict[tuple[str, str], Any] = {}
        self.trials_done = 0

    def install_signal_handlers(self) -> None:
        def preempt(signum: int, _frame: object) -> None:
            log.warning("action=preempt signal=%s worker=%s", signal.Signals(signum).name, self.options.name)
            self.preempted = True

        signal.signal(signal.SIGTERM, preempt)
        signal.signal(signal.SIGINT, preempt)

    def worker_info(self) -> dict[str, str]:
        return {"name": self.options.name, "device": self._device_name(), "hostname": socket.gethostname()}

    def _device_name(self) -> str:
        from ranktune.trainer.proxy import resolve_device

        device = resolve_device(self.options.device)
        if device.type == "cuda":
            import torch

            return f"{device} ({torch.cuda.get_device_name(device)})"
        return str(device)

    def flush_spool(self) -> None:
        for adapter in self.spool.pending_adapters():  # before the reports that complete their attempts
            self._upload(adapter)
        for state in self.spool.pending_states():
            self._upload_state(state)
        for report in self.spool.pending():
            self._send(report.lease_id, report.kind, report.body, report)

    def _upload(self, adapter: PendingAdapter) -> None:
        """Send a spooled adapter zip; refused for good (4xx but auth) it is dropped, else kept to resend.
        A 404/409 (the lease or the search moved on) or 413/422 (too large, unreadable): the result
        itself still goes in; only the weights are not kept."""
        send = self.client.upload_adapter
        self._deliver("adapter", adapter.path, lambda data: send(adapter.lease_id, adapter.attempt, data))

    def _upload_state(self, state: PendingState) -> None:
        """Send a spooled rung state, the same way: a refused one only means its promotion starts over."""
        send, lease, attempt = self.client.upload_checkpoint, state.lease_id, state.attempt
        self._deliver("state", state.path, lambda data: send(lease, attempt, state.steps, data))

    def _deliver(self, what: str, path: Path, send: Callable[[bytes], None]) -> None:
        try:
            send(path.read_bytes())
        except ServerRejected as e:
            if e.status in (401, 403):
                raise
            log.warning("action=%s_dropped file=%s error=%s", what, path.name, e)
        except Exception as e:
            log.error("action=%s_spooled file=%s error=%r", what, path.name, e)
            return
        path.unlink(missing_ok=True)

    def _send(self, lease_id: str, kind: str, body: dict[str, Any], report: Any = None) -> None:
        if kind == "fail":
            body = {**body, "reason": reason_text(str(body.get("reason") or "failed"))}
        report = report or self.spool.put(lease_id, kind, body)  # type: ignore[arg-type]
        try:
            self.client.report(lease_id, kind, body)
        except ServerRejected as e:
            if e.status in (401, 403):  # a token to fix: the report stays spooled for the next start
                raise
            # 404/409: the lease is gone or already answered. 400/413/422: the server will never take this
            # body, so resending it at every start would block the worker for good; a refused result
            # becomes a failure the search can see.
            log.warning("action=report_dropped lease=%s kind=%s error=%s", lease_id, kind, e)
            self.spool.done(report)
            if kind == "complete" and e.status not in (404, 409):
                reason = f"the server refused this trial's result: {e}"
                self._send(
                    lease_id, "fail", {"attempt": body.get("attempt"), "reason": reason, "retryable": False}
                )
            return
        except Exception as e:  # the report stays spooled for the next start
            log.error("action=report_spooled lease=%s kind=%s error=%r", lease_id, kind, e)
            return
        self.spool.done(report)

    def run(self) -> int:
        self.flush_spool()
        while not self.preempted:
            if self.options.max_trials is not None and self.trials_done >= self.options.max_trials:
                break
            job, wait_s = self.client.claim(self.worker_info())
            if job is None:
                if self.options.once:
                    break
                time.sleep(min(wait_s, self.options.max_poll_s))
                continue
            self.run_job(job)
            self.trials_done += 1
            if self.options.once:
                break
        self.client.close()
        return 0

    def task_for(self, job: dict[str, Any]) -> Any:
        from ranktune.trainer.tasks.registry import load_task

        key = (job["task"], job["model"])
        if key not in self._tasks:
            self._tasks[key] = load_task(job["task"], job["model"])
        return self._tasks[key]

    def _resume_state(self, job: dict[str, Any]) -> Any:
        """The training state a promotion goes on from (``Job.resume``), or None: train from the start
        (none asked for, or it cannot be had: the search ended, the server is older, the bytes are bad)."""
        from ranktune.trainer.resume import TrainState

        resume = job.get("resume")
        if not resume:
            return None
        try:
            state = TrainState.from_bytes(self.client.download_checkpoint(job["lease_id"]))
        except (ServerRejected, RanktuneError) as e:
            log.warning("action=resume_unavailable trial=%s error=%s", job["trial_id"], e)
            return None
        log.info("action=resume trial=%s from_step=%d", job["trial_id"], state.steps)
        return state

    def run_job(self, job: dict[str, Any]) -> None:
        from ranktune.trainer.adapters import AdapterMethod
        from ranktune.trainer.errors import TrainingError
        from ranktune.trainer.proxy import Checkpoint, ProxyResult, ProxySettings, Resize, proxy_finetune
        from ranktune.trainer.resume import TrainState

        lease, trial = job["lease_id"], job["trial_id"]
        log.info("action=claimed search=%s trial=%s attempt=%s worker=%s", job["search_id"], trial,
                 job["attempt"], self.options.name)  # fmt: skip
        heart = Heartbeat(self.client, job)
        settings = ProxySettings(**job["proxy"], checkpoints=dynamic_steps(job))

        def on_checkpoint(point: Checkpoint) -> Resize | None:
            measurement = {"step": point.step, "loss": point.loss, "metric": point.metric}
            if point.step in settings.checkpoints:
                # A re-allocation point: report the adapters now and wait for the server's answer.
                heart.record(measurement, point.site_statistics())
                heart.step = point.step
                heart.beat()
            else:
                heart.record(measurement)
            if heart.resize_to is not None:
                schedule, heart.resize_to = RankSchedule.from_json(heart.resize_to), None
                return Resize(schedule)
            return None

        def on_step(step: int, _loss: float) -> None:
            heart.step = step

        def stop_requested() -> str | None:
            return "preempted" if self.preempted else heart.stop_reason

        def train(start: TrainState | None) -> ProxyResult:
            return proxy_finetune(
                task, RankSchedule.from_json(job["schedule"]), AdapterMethod.from_json(job["method"]),
                settings, device=self.options.device, callback=on_checkpoint,
                on_step=on_step, stop_requested=stop_requested, eval_split=job.get("eval_split", "val"),
                objective=(job.get("objective") or {}).get("metric"), start=start,
                keep_state=bool(job.get("keep_state")),
            )  # fmt: skip

        heart.start()
        try:
            task = self.task_for(job)
            start = self._resume_state(job)
            try:
                result = train(start)
            except TrainingError as e:
                if start is None or e.field != "resume":
                    raise
                log.warning("action=resume_refused trial=%s error=%s", trial, e)
                result = train(None)  # the state does not fit: the rung trains from the start
        except RanktuneError as e:
            heart.finish()
            self._send(lease, "fail", {"attempt": job["attempt"], "reason": str(e), "retryable": False})
            return
        except Exception as e:  # e.g. out of memory: another worker may manage
            heart.finish()
            log.exception("action=trial_crashed trial=%s", trial)
            self._send(lease, "fail", {"attempt": job["attempt"], "reason": repr(e), "retryable": True})
            return
        heart.finish()
        if result.stopped:
            retryable = result.stopped == "preempted"
            self._send(
                lease, "fail", {"attempt": job["attempt"], "reason": result.stopped, "retryable": retryable}
            )
            return
        metrics = {result.metric_name: result.metric, **result.metrics}
        if result.metric_se is not None:
            metrics[f"{result.metric_name}_se"] = result.metric_se
        body = {"attempt": job["attempt"], **result.to_json(), "metrics": metrics}
        for key in ("metric_name", "metric", "stopped", "steps_done", "examples", "metric_se"):
            body.pop(key, None)
        if not body.get("resumed_from"):
            body.pop("resumed_from", None)  # a server from before resumable rungs refuses the key
        if result.model is not None:
            from ranktune.trainer.adapters.inject import effective_schedule

            schedule = RankSchedule.from_json(job["schedule"])
            body["exported_params"] = effective_schedule(result.model, schedule).parameter_count
            if job.get("upload_adapter"):
                archive = adapter_archive(result.model, schedule, job["model"], task.saved_heads)
                self._upload(self.spool.put_adapter(lease, int(job["attempt"]), archive))
        if result.state is not None:
            state = result.state.to_bytes()
            self._upload_state(self.spool.put_state(lease, int(job["attempt"]), result.state.steps, state))
        self._send(lease, "complete", body)
        log.info(
            "action=completed trial=%s metric=%.4f wall_s=%.1f", trial, result.metric, result.wall_time_s
        )


def adapter_archive(
    model: Any, schedule: RankSchedule, base_model: str, heads: tuple[str, ...] = ()
) -> bytes:
    """The trained adapter in PEFT's format (with the model's own trained ``heads`` as
    ``modules_to_save``), zipped (stored: safetensors hardly compress)."""
    import io
    import tempfile
    import zipfile

    from ranktune.trainer.adapters.export import save_peft_adapter

    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="ranktune-adapter-") as tmp:
        out = save_peft_adapter(model, schedule, tmp, base_model=base_model, heads=heads)
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for path in sorted(out.iterdir()):
                archive.write(path, path.name)
    return buffer.getvalue()


REASON_CHARS = 2_000  # the server accepts 10,000; a traceback's head says what went wrong


def reason_text(text: str) -> str:
    """A failure reason the server accepts: no NUL characters, at most ``REASON_CHARS`` long."""
    text = text.replace("\x00", "")
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."

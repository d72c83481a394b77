"""The training CLI as a local process: its arguments, the subprocess, and what its death means."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import uuid
from typing import Any

from mlops.core.config import get_config
from mlops.core.errors import GateFailed, InfrastructureError
from mlops.core.lake import run_key
from mlops.core.settings import REPO_ROOT, get_settings

log = logging.getLogger(__name__)


TRAINING_IMAGE_TAG = "mlops.training_image"
LOCAL_PROCESS_IMAGE = "local-process"


def run_name(dag_id: str, run_id: str) -> str:
    """The MLflow run name of a DAG run's training."""
    return f"{dag_id}/{run_id}"


def train_tags(*, dag_id: str, run_id: str, trigger: str, image: str) -> dict[str, str]:
    """MLflow run tags of a training: the DAG run behind it, what triggered it and the image it runs in.

    ``image`` is what actually runs (the pod's image, or :data:`LOCAL_PROCESS_IMAGE`); the registry's
    ``lineage.training_image`` tag is read back from the run, so it names what ran.
    """
    return {
        "airflow.dag_id": dag_id,
        "airflow.dag_run_id": run_id,
        "airflow.trigger": trigger,
        TRAINING_IMAGE_TAG: image,
    }


def train_arguments(
    model: str,
    *,
    training_set_uri: str,
    holdout_uri: str,
    estimator_params_json: str,
    tags: dict[str, str],
    run_name: str,
) -> list[str]:
    """CLI arguments of ``python -m mlops.model.train``: the one builder for the pod and the local process.

    The pod passes Jinja templates as values (rendered by Airflow), the local process plain values;
    ``estimator_params_json`` is JSON text for that reason (``json.dumps`` here, ``tojson`` in the pod).
    """
    return [
        "--model",
        model,
        "--training-set",
        training_set_uri,
        "--holdout-output",
        holdout_uri,
        "--estimator-params",
        estimator_params_json,
        "--tags",
        json.dumps(tags),
        "--run-name",
        run_name,
    ]


def train_local(
    model: str,
    training_set: dict[str, Any],
    *,
    run_name: str,
    estimator_params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run the training CLI as a local process (the laptop twin of the training pod).

    Exit 2 is the CLI's verdict on the data (``GateFailed``). A process killed by a signal (the OOM
    killer's SIGKILL, exit 137), one that outlives ``training.timeout_minutes`` (its whole process group
    is killed) or one that dies otherwise raises :class:`InfrastructureError`, which Airflow retries; its
    MLflow run, found by the ``mlops.attempt`` tag set here, is ended FAILED or KILLED.
    """
    attempt = uuid.uuid4().hex
    tags = {**(tags or {}), ATTEMPT_TAG: attempt}
    # Each attempt scores its own holdout file: a re-run never rewrites one a registered version points at.
    holdout = str(training_set["holdout_uri"])
    training_set = {**training_set, "holdout_uri": f"{holdout.removesuffix('.parquet')}-{attempt[:12]}.parquet"}
    args = train_arguments(
        model,
        training_set_uri=str(training_set["uri"]),
        holdout_uri=str(training_set["holdout_uri"]),
        estimator_params_json=json.dumps(estimator_params or {}),
        tags=tags,
        run_name=run_name,
    )
    settings = get_settings()
    if timeout_s is None:
        timeout_s = get_config(model).config.training.timeout_minutes * 60
    out_dir = settings.state_dir / "work" / model
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{run_key(run_name)}.json"
    output.unlink(missing_ok=True)  # a result left by an earlier attempt must not pass for this one's
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "include"), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.model.train", *args, "--output", str(output)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=settings.state_dir,
        start_new_session=True,  # its own process group: a timeout kills the trainer and its workers
    )
    try:
        _, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        _, stderr = proc.communicate()
        _log_tail(stderr)
        ended = end_attempt_runs(model, attempt, "KILLED")
        raise InfrastructureError(
            f"training of {model} timed out after {timeout_s / 60:g} min (training.timeout_minutes): process "
            f"group killed, MLflow run(s) {ended or 'none yet'} ended KILLED; retrying"
        ) from None
    _log_tail(stderr)
    code = proc.returncode
    if code == 0 and output.exists():
        result: dict[str, Any] = json.loads(output.read_text())
        return result
    if code == TRAIN_VERDICT_EXIT:
        reason = (stderr.strip().splitlines() or ["no output"])[-1]
        end_attempt_runs(model, attempt, "FAILED")
        raise GateFailed(f"training of {model} failed (exit {code}): {reason}")
    ended = end_attempt_runs(model, attempt, "FAILED")
    raise InfrastructureError(
        f"training of {model} {_death(code)}: infrastructure failure, not a verdict; MLflow run(s) "
        f"{ended or 'none yet'} ended FAILED; retrying"
    )


ATTEMPT_TAG = "mlops.attempt"


TRAIN_VERDICT_EXIT = 2  # mlops.model.train's exit for a ValueError about the data or the config


def _death(code: int) -> str:
    """How a process ended, in words: killed by which signal (137/-9: most often the OOM killer)."""
    import signal

    number = -code if code < 0 else code - 128 if code > 128 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = " (out of memory? the OOM killer sends SIGKILL)" if number == signal.SIGKILL else ""
        return f"was killed by {name} (exit {code}){hint}"
    if code == 0:
        return "exited 0 without writing its result"
    return f"crashed (exit {code})"


def _kill_group(pid: int) -> None:
    import signal

    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)


def _log_tail(stderr: str) -> None:
    from mlops.core.progress import log_group

    with log_group("training process: its last 30 log lines", log):
        for line in stderr.splitlines()[-30:]:
            log.info("train | %s", line)


def end_attempt_runs(model: str, attempt: str, status: str) -> list[str]:
    """End the MLflow run(s) of one training attempt still RUNNING (its process died); returns their ids."""
    import mlflow
    from mlops.core.tracking import client, configure

    try:
        configure()
        experiment = mlflow.get_experiment_by_name(model)
        if experiment is None:
            return []
        mlflow_client = client()
        runs = mlflow_client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`{ATTEMPT_TAG}` = '{attempt}' and attributes.status = 'RUNNING'",
        )
        for run in runs:
            mlflow_client.set_tag(run.info.run_id, "mlops.ended_by", f"training process ended: {status}")
            mlflow_client.set_terminated(run.info.run_id, status=status)
        return [run.info.run_id for run in runs]
    except Exception as exc:  # the registry doctor ends it later; the training's own error matters more
        log.warning("could not end the MLflow run of training attempt %s: %s", attempt, exc)
        return []

"""Faults caused for real on the production stack; after each, the registry doctor's invariants hold and
nothing is lost or doubled.

The stack of ``tests/production_stack.py`` (Postgres, Redis, moto's S3 server, an MLflow server on
Postgres with artifacts in S3, Airflow) is shared with ``test_real_services.py``. These tests call the
pipeline and registry functions the DAG tasks call, in this process or in child processes, and cause
each fault at a chosen moment: the MLflow server SIGKILLed and started again on the same database, every
Postgres connection of the MLflow database terminated (what a Postgres restart does to its clients; the
machine's server itself is shared and never restarted), S3 unreachable (a TCP relay in front of moto's
server is shut: moto keeps its data in memory, so stopping moto itself would lose every bucket), the
training process SIGKILLed, two landings of the same days at once, and a write to a full filesystem.

They use days of their own (January 2026) and a registered model of their own, so the results that
``test_real_services.py`` reads (March 2026, ``credit_risk``'s aliases) are not changed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from production_stack import MODEL, Stack

pytestmark = pytest.mark.integration

FAULT_MODEL = f"{MODEL}_faults"  # registered model of the registry faults; never credit_risk's aliases
DAY_S3_INGEST = date(2026, 1, 5)
DAY_S3_MATERIALIZE = date(2026, 1, 6)
DAYS_TOGETHER = [
    date(2026, 1, 7),
    date(2026, 1, 8),
    date(2026, 1, 9),
]  # landed by two processes at once; the training window
ROWS = 200
SLOW_TRAINING = {"n_estimators": 4000, "max_depth": 8, "learning_rate": 0.01}  # long enough to be hit mid-run
QUICK_TRAINING = {"n_estimators": 20}
RESTARTS = 4  # times every connection of the MLflow database is terminated during one training run


# --------------------------------------------------------------------------------------------- helpers


class TcpRelay:
    """A loopback TCP relay to an upstream server, shut and opened again at will (the network fault).

    Shut: the listening socket closes and every relayed connection is cut, so clients get connection
    refused or reset, as when the endpoint goes away. The port stays the same when it opens again.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.shut_count = 0

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        self.shut_count += 1
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text.strip(), f"not one line: {text!r}"
    return text


def _land(stack: Stack, day: date) -> bytes:
    from mlops_dev.datagen import GENERATORS

    content: bytes = GENERATORS[MODEL](day, rows_per_batch=ROWS).to_csv(index=False).encode()
    stack.s3().put_object(Bucket=stack.buckets["landing"], Key=f"landing/{MODEL}/{day}.csv", Body=content)
    return content


def _assert_day_once(day: date, content: bytes) -> None:
    """The day's batch is in the raw store byte for byte, once, and validated once (no doubled rows)."""
    import pandas as pd

    from mlops.core import lake as lake_io
    from mlops.core.config import get_config
    from mlops.core.settings import get_settings
    from mlops.data import snapshots
    from mlops.data import steps as data_steps
    from mlops.data.ingest import pending_days, raw_store, read_manifest
    from mlops.data.snapshots import SNAPSHOT_FILE

    cfg = get_config(MODEL).config
    raw = raw_store(cfg, get_settings())
    sha = hashlib.sha256(content).hexdigest()
    assert raw.get(f"objects/{sha[:2]}/{sha}.csv") == content  # raw bytes kept
    assert [k for k in raw.list("objects/") if sha in k] == [f"objects/{sha[:2]}/{sha}.csv"]
    assert json.loads(raw.get(f"index/{sha}.json"))["interval"] == day.isoformat()
    assert [f.sha256 for f in read_manifest(cfg, day.isoformat())] == [sha]
    lake = lake_io.open_lake(get_settings())
    partitions = lake.list(f"validated/{MODEL}/date={day}/")
    assert partitions == [f"validated/{MODEL}/date={day}/{SNAPSHOT_FILE}"], partitions  # one published snapshot
    record = snapshots.current(lake, MODEL, day)
    assert record is not None and record.materialized_at, record  # online once
    validated = data_steps.read_validated(MODEL, [day])
    landed = pd.read_csv(io.BytesIO(content))
    assert len(validated) == len(landed) == ROWS
    assert not validated.duplicated().any()
    assert day not in pending_days(cfg)


def _assert_doctor_clean(model: str) -> None:
    from mlops.model.registry import doctor

    report = doctor(model)
    assert report.findings == [], [f.line() for f in report.findings]


def _experiment_runs(model: str, run_name: str) -> list[Any]:
    import mlflow
    from mlops.core.tracking import client, configure

    configure()
    experiment = mlflow.get_experiment_by_name(model)
    if experiment is None:
        return []
    runs: list[Any] = client().search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'"
    )
    return runs


def _in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:  # the test asserts on it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


# -------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def env(production_stack: Stack) -> Iterator[Stack]:
    """This process sees the stack's production settings for one test."""
    with production_stack.project_env():
        yield production_stack


@pytest.fixture
def s3_relay(env: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpRelay]:
    """This process reaches S3 through a relay the test can shut; the stack's services do not."""
    port = int(env.s3_endpoint.rsplit(":", 1)[1])
    relay = TcpRelay(("127.0.0.1", port))
    relay.open()
    monkeypatch.setenv("MLOPS_S3_ENDPOINT_URL", relay.endpoint)
    try:
        yield relay
    finally:
        relay.shut()


@pytest.fixture(scope="module")
def landed_together(production_stack: Stack) -> dict[date, bytes]:
    """DAYS_TOGETHER landed, then processed by two landing processes started at the same moment."""
    with production_stack.project_env():
        contents = {day: _land(production_stack, day) for day in DAYS_TOGETHER}
        code = (  # the landing task's call; NothingToDo is its skip ("nothing left to process")
            "import json, sys\n"
            "from mlops.core.errors import NothingToDo\n"
            "from mlops.data.steps import process_landed\n"
            "try:\n"
            "    done = process_landed(sys.argv[1], sys.argv[2:])['intervals']\n"
            "except NothingToDo:\n"
            "    done = []\n"
            "print(json.dumps(done))\n"
        )
        args = [sys.executable, "-c", code, MODEL, *(d.isoformat() for d in DAYS_TOGETHER)]
        procs = [
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
            for _ in range(2)
        ]
        outs = [proc.communicate(timeout=300) for proc in procs]
    done: list[str] = []
    for proc, (out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        done += json.loads(out.strip().splitlines()[-1])
    # Each day went through (to its materialization) in exactly one of the two; the other skipped it.
    assert sorted(done) == [d.isoformat() for d in DAYS_TOGETHER], done
    return contents


@pytest.fixture(scope="module")
def training_set(production_stack: Stack, landed_together: dict[date, bytes]) -> dict[str, Any]:
    with production_stack.project_env():
        from mlops.features import steps as feature_steps

        return feature_steps.build_training_set(
            MODEL, "faults", window_end=DAYS_TOGETHER[-1].isoformat(), window_days=len(DAYS_TOGETHER)
        )


@pytest.fixture(scope="module")
def killed_training(production_stack: Stack, training_set: dict[str, Any]) -> dict[str, Any]:
    """A training attempt SIGKILLed while it logs to MLflow, then the task's retry (which trains)."""
    with production_stack.project_env():
        from mlops.core.tracking import client
        from mlops.model import launch

        run_name = "faults-sigkill"
        thread, outcome = _in_thread(
            lambda: launch.train_local(MODEL, training_set, run_name=run_name, estimator_params=SLOW_TRAINING)
        )
        pid, mlflow_run = _wait_for_training(run_name, thread)
        os.kill(pid, signal.SIGKILL)
        thread.join(120)
        killed = {
            "error": outcome.get("error"),
            "mlflow_run": mlflow_run,
            "status": client().get_run(mlflow_run).info.status,
        }
        retried = launch.train_local(MODEL, training_set, run_name=f"{run_name}-retry", estimator_params=QUICK_TRAINING)
        return {"killed": killed, "retried": retried}


@pytest.fixture(scope="module")
def trained(killed_training: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = killed_training["retried"]
    return result


# ------------------------------------------------------------------------------------- data path faults


def test_s3_outage_during_ingest_fails_clearly_and_the_rerun_processes_the_day_once(
    env: Stack, s3_relay: TcpRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.core import errors
    from mlops.core.storage import S3Store
    from mlops.data import steps as data_steps

    content = _land(env, DAY_S3_INGEST)
    real_copy = S3Store.copy_to

    def copy_after_outage(self: S3Store, key: str, dest: Any, dest_key: str) -> None:
        if dest_key.startswith("objects/"):  # the raw copy of the batch: S3 goes away under it
            s3_relay.shut()
        real_copy(self, key, dest, dest_key)

    monkeypatch.setattr(S3Store, "copy_to", copy_after_outage)
    with pytest.raises(Exception) as failed:
        data_steps.process_landed_day(MODEL, DAY_S3_INGEST.isoformat())
    assert s3_relay.shut_count == 1
    line = _one_line(failed.value)
    assert s3_relay.endpoint in line or "endpoint" in line.lower(), line
    assert not isinstance(failed.value, (errors.GateFailed, errors.NothingToDo))  # retried, not a verdict

    monkeypatch.setattr(S3Store, "copy_to", real_copy)
    s3_relay.open()
    result = data_steps.process_landed_day(MODEL, DAY_S3_INGEST.isoformat())
    assert result["rows"] == ROWS
    _assert_day_once(DAY_S3_INGEST, content)


def test_s3_outage_during_materialization_fails_clearly_and_the_rerun_processes_the_day_once(
    env: Stack, s3_relay: TcpRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops.core import errors
    from mlops.data import steps as data_steps
    from mlops.features import store as features

    content = _land(env, DAY_S3_MATERIALIZE)
    real = features.materialize_interval

    def materialize_after_outage(*args: Any, **kwargs: Any) -> int:
        s3_relay.shut()
        return real(*args, **kwargs)

    monkeypatch.setattr(features, "materialize_interval", materialize_after_outage)
    with pytest.raises(Exception) as failed:
        data_steps.process_landed_day(MODEL, DAY_S3_MATERIALIZE.isoformat())
    assert s3_relay.shut_count == 1
    line = _one_line(failed.value)
    assert s3_relay.endpoint in line or "endpoint" in line.lower(), line
    assert not isinstance(failed.value, (errors.GateFailed, errors.NothingToDo))

    monkeypatch.setattr(features, "materialize_interval", real)
    s3_relay.open()
    result = data_steps.process_landed_day(MODEL, DAY_S3_MATERIALIZE.isoformat())
    assert result["rows"] == result["materialized"] == ROWS
    _assert_day_once(DAY_S3_MATERIALIZE, content)


def test_two_landings_of_the_same_days_at_once_process_each_day_once(
    env: Stack, landed_together: dict[date, bytes]
) -> None:
    for day, content in landed_together.items():
        _assert_day_once(day, content)


def test_a_write_to_a_full_disk_fails_clearly_leaves_no_partial_file_and_a_rerun_succeeds(tmp_path: Path) -> None:
    from mlops.core.storage import LocalStore
    from mlops.features import steps as feature_steps

    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    try:
        lake = LocalStore(mount / "lake")
        filler = mount / "filler"
        filler.write_bytes(b"\0" * (1536 * 1024))
        data = os.urandom(1024 * 1024)
        with pytest.raises(OSError) as failed:
            lake.put("validated/day.parquet", data)
        assert failed.value.errno == errno.ENOSPC
        assert "No space left on device" in _one_line(failed.value)
        assert lake.list() == []  # no partial object, no temporary file left behind
        assert not lake.exists("validated/day.parquet")

        import pandas as pd

        frame = pd.DataFrame({"x": range(20_000), "y": [os.urandom(16).hex() for _ in range(20_000)]})
        with pytest.raises(OSError) as also:
            feature_steps.write_training_set(lake, "runs/m/r", frame)  # write-once training set, same contract
        assert also.value.errno == errno.ENOSPC
        assert lake.list() == []

        filler.unlink()  # space freed: the rerun writes whole objects
        lake.put("validated/day.parquet", data)
        assert lake.get("validated/day.parquet") == data
        key, digest = feature_steps.write_training_set(lake, "runs/m/r", frame)
        assert hashlib.sha256(lake.get(key)).hexdigest() == digest
        assert lake.list() == sorted([key, "validated/day.parquet"])
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


# ------------------------------------------------------------------------------------ training faults


def _wait_for_training(run_name: str, thread: threading.Thread, timeout: float = 240) -> tuple[int, str]:
    """pid of the running ``mlops.model.train`` process of ``run_name`` and its MLflow run id, once it logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and thread.is_alive():
        runs = [r for r in _experiment_runs(MODEL, run_name) if r.info.status == "RUNNING"]
        pids = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _cmdline(p).count(run_name) and "mlops.model.train" in _cmdline(p)
        ]
        if runs and pids:
            return pids[0], str(runs[0].info.run_id)
        time.sleep(0.2)
    raise AssertionError(f"training {run_name} never showed a RUNNING MLflow run with its process alive")


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_sigkill_of_training_is_a_retriable_infrastructure_error_and_a_retry_trains(
    env: Stack, killed_training: dict[str, Any]
) -> None:
    from mlops.core import errors
    from mlops.core.tracking import client

    killed = killed_training["killed"]
    error = killed["error"]
    assert isinstance(error, errors.InfrastructureError), killed
    line = _one_line(error)
    assert "SIGKILL" in line and killed["mlflow_run"] in line and "retrying" in line, line
    assert killed["status"] == "FAILED"  # ended by train_local, not left RUNNING for the doctor
    assert client().get_run(killed_training["retried"]["run_id"]).info.status == "FINISHED"
    _assert_doctor_clean(MODEL)


def test_postgres_connections_dropped_during_training_the_run_completes_or_fails_retriably(
    env: Stack, training_set: dict[str, Any]
) -> None:
    import psycopg

    from mlops.core import errors
    from mlops.core.tracking import client
    from mlops.model import launch

    database = env.databases["mlflow"]
    run_name = "faults-postgres"
    thread, outcome = _in_thread(
        lambda: launch.train_local(MODEL, training_set, run_name=run_name, estimator_params=QUICK_TRAINING)
    )
    _wait_for_training(run_name, thread)
    terminated = 0
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as admin:
        for _ in range(RESTARTS):  # every connection of the MLflow database, as a restart would, a few times
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
            terminated += sum(1 for (done,) in rows if done)
            time.sleep(0.7)
    thread.join(300)
    assert terminated > 0, "no MLflow database connection was terminated: the fault never happened"
    ended = "completed" if "result" in outcome else f"failed: {outcome.get('error')}"
    print(f"terminated {terminated} MLflow database connection(s) during the training run; it {ended}")
    runs = _experiment_runs(MODEL, run_name)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    if "result" in outcome:  # the server reconnected: the run went through
        assert outcome["result"]["run_id"] == runs[0].info.run_id
        assert client().get_run(runs[0].info.run_id).info.status == "FINISHED"
    else:
        assert isinstance(outcome["error"], errors.InfrastructureError), outcome
        _one_line(outcome["error"])
        assert client().get_run(runs[0].info.run_id).info.status in ("FAILED", "KILLED")
    _assert_doctor_clean(MODEL)


# ------------------------------------------------------------------------------------ registry faults


@pytest.fixture
def registry_env(env: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    """A faulted attempt fails at once (MLflow's client would otherwise ride out a short outage in its
    own retries), and a lock its dead holder left expires in seconds rather than minutes; each test
    leaves the MLflow server running."""
    from mlops.model import registry

    monkeypatch.setattr(registry, "LOCK_TTL_S", 3.0)
    try:
        yield env
    finally:
        assert env.mlflow is not None
        if env.mlflow.proc is None or env.mlflow.proc.poll() is not None:
            env.mlflow.start()


def _registration_tags(trained: dict[str, Any], training_set: dict[str, Any]) -> dict[str, str]:
    from mlops.model.registry import REQUIRED_GATES, TRAINING_SET_DIGEST_TAG, TRAINING_SET_URI_TAG

    return {
        TRAINING_SET_URI_TAG: training_set["uri"],
        TRAINING_SET_DIGEST_TAG: training_set["sha256"],
        "lineage.training_run_id": trained["run_id"],
        **{f"gate.{gate}": "passed" for gate in REQUIRED_GATES},
    }


def _attempt_with_mlflow_down(monkeypatch: pytest.MonkeyPatch, attempt: Callable[[], Any]) -> BaseException:
    """Run one task attempt that the MLflow server dies under; return its error."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    try:
        attempt()
    except Exception as exc:
        return exc
    finally:
        monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES")  # the retry is a fresh attempt
    raise AssertionError("the attempt succeeded although the MLflow server was killed under it")


def test_mlflow_killed_during_registration_the_retry_converges_with_one_record(
    registry_env: Stack,
    trained: dict[str, Any],
    training_set: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow
    from mlops.core.tracking import client
    from mlops.model.registry import CHALLENGER, alias_history, get_alias_version, register_version, set_alias

    stack = registry_env
    assert stack.mlflow is not None
    tags = _registration_tags(trained, training_set)
    ids = {"dag_id": f"{MODEL}__training", "dag_run_id": "manual__faults-register", "task_id": "register"}
    real_register = mlflow.register_model

    def register_then_server_dies(*args: Any, **kwargs: Any) -> Any:
        created = real_register(*args, **kwargs)  # the version is in the database ...
        stack.mlflow.kill()  # ... and the server dies before the task moves the alias
        return created

    def attempt() -> str:
        version = register_version(FAULT_MODEL, trained["run_id"], tags)
        set_alias(FAULT_MODEL, CHALLENGER, version, actor="airflow", reason="passed every gate", **ids)
        return version

    monkeypatch.setattr(mlflow, "register_model", register_then_server_dies)
    error = _attempt_with_mlflow_down(monkeypatch, attempt)
    assert stack.mlflow_uri in _one_line(error), error
    monkeypatch.setattr(mlflow, "register_model", real_register)

    stack.mlflow.start()
    version = attempt()  # the task's retry: the same Airflow run and task
    versions = client().search_model_versions(f"name='{FAULT_MODEL}' and run_id='{trained['run_id']}'")
    assert [v.version for v in versions] == [version]  # registered once
    assert get_alias_version(FAULT_MODEL, CHALLENGER) == version
    assert [c.to_version for c in alias_history(FAULT_MODEL, CHALLENGER)] == [version]
    attempt()  # a further retry changes nothing
    assert len(alias_history(FAULT_MODEL, CHALLENGER)) == 1
    _assert_doctor_clean(FAULT_MODEL)


def test_mlflow_killed_between_intent_record_and_alias_move_the_retry_converges_on_the_first_target(
    registry_env: Stack,
    trained: dict[str, Any],
    training_set: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlops.core.tracking import client
    from mlops.model import registry
    from mlops.model.registry import CHAMPION, alias_history, doctor, get_alias_version, register_version, set_alias

    stack = registry_env
    assert stack.mlflow is not None
    tags = _registration_tags(trained, training_set)
    first = client().get_model_version(FAULT_MODEL, register_version(FAULT_MODEL, trained["run_id"], tags))

    def another_version() -> str:
        created = client().create_model_version(
            FAULT_MODEL, first.source, run_id=first.run_id, tags=tags, model_id=first.source.removeprefix("models:/")
        )
        return str(created.version)

    target, other = another_version(), another_version()
    before = get_alias_version(FAULT_MODEL, CHAMPION)
    ids = {"dag_id": f"{MODEL}__training", "dag_run_id": "manual__faults-promote", "task_id": "promote"}
    real_open = registry._open_intent

    def intent_then_server_dies(*args: Any, **kwargs: Any) -> str:
        run_id = real_open(*args, **kwargs)  # the intent record is written ...
        stack.mlflow.kill()  # ... and the server dies before the alias moves
        return run_id

    monkeypatch.setattr(registry, "_open_intent", intent_then_server_dies)
    error = _attempt_with_mlflow_down(
        monkeypatch, lambda: set_alias(FAULT_MODEL, CHAMPION, target, actor="approver", reason="approved", **ids)
    )
    assert stack.mlflow_uri in _one_line(error), error
    monkeypatch.setattr(registry, "_open_intent", real_open)

    stack.mlflow.start()
    assert get_alias_version(FAULT_MODEL, CHAMPION) == before  # nothing moved
    seen = doctor(FAULT_MODEL)  # the doctor sees the open move (and breaks the lock the dead attempt held)
    assert [(f.check, f.repairable) for f in seen.findings] == [("history", True)], [f.line() for f in seen.findings]
    # The task's retry (same Airflow run and task) converges on the first attempt's target, whatever it
    # would plan now.
    change = set_alias(FAULT_MODEL, CHAMPION, other, actor="approver", reason="approved", **ids)
    assert change.to_version == target and change.from_version == before
    assert get_alias_version(FAULT_MODEL, CHAMPION) == target
    moves = alias_history(FAULT_MODEL, CHAMPION)
    assert [m.to_version for m in moves] == [target]  # one record of the one move
    assert registry._history_runs(FAULT_MODEL, "RUNNING") == []
    _assert_doctor_clean(FAULT_MODEL)
    cli = subprocess.run(  # the documented command agrees
        [sys.executable, "-m", "mlops.model.registry", "doctor", "--model", FAULT_MODEL],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr

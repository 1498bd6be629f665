"""The MLflow tracker: one object per run, each call addressed to that run's id.

    tracker = start_run(experiment="lt100", run_name="resnet32-ce-s0", description="CE baseline")
    tracker.log_params({"optim.lr": 0.1})
    tracker.log_metrics({"train_loss": 2.1, "val_acc": 0.31}, step=0)
    tracker.finish("FINISHED")

Built on `MlflowClient` with explicit run ids, never MLflow's global "active run": one
process logs to several runs at once (fused training of K models) and sweep workers run in
parallel. Every store call goes through `call_with_retry`, so concurrent writers to one
sqlite file wait for each other instead of losing data to "database is locked". The write
side of tracking; `runstore.RunStore` is the read side, and uses `connect` and `get_run`.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import tempfile
import time
import uuid
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE
from mlflow.utils.validation import (
    MAX_DATASET_DIGEST_SIZE,
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from cifarctl.errors import CifarctlError, UsageError, first_line
from cifarctl.tracking.base import Tracker, check_status
from cifarctl.tracking.retry import call_with_retry, is_lock_message
from cifarctl.tracking.store import (
    SCHEME,
    artifact_root,
    check_driver,
    check_reachable,
    is_server,
    resolve_tracking_uri,
    sqlite_path,
)

TRUNCATED = "...[truncated]"  # marks a value cut to MLflow's length limit


# ---- quiet MLflow: keep its real errors, drop what users do not need -------------------

def _drop_lock_reports(record: logging.LogRecord) -> bool:
    """MLflow logs a traceback for every sqlite lock it meets; we retry those, so hide them."""
    return not is_lock_message(record.getMessage())


def _quiet_mlflow() -> None:
    # "Creating initial MLflow database tables..." / "Updating database tables" on a new store
    db_log = logging.getLogger("mlflow.store.db.utils")
    db_log.setLevel(logging.WARNING)
    db_log.addFilter(_drop_lock_reports)  # a no-op when already added
    logging.getLogger("alembic").setLevel(logging.WARNING)  # schema-migration chatter
    # MLflow 3.17 + SQLAlchemy 2: "The noload loader strategy is deprecated" on first use
    warnings.filterwarnings("ignore", message=".*noload.*", category=DeprecationWarning)
    # set_terminated writes "View run ... at: URL" to stdout for server stores, once per run:
    # K lines for K fused runs, into our tables and `--json` output. A user's explicit
    # setting wins, here and below.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow retries a lost server for ~4 min a request (7 retries, for rate-limited hosted
    # backends) and a silent one for 120 s an attempt: a sweep whose server died hung for 12
    # minutes, Ctrl-C included. 4 retries wait 0 + 4 + 8 + 16 s, enough for a restart;
    # then `retry.TrackingLost` says so in one line (all environment: workers inherit it).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


# ---- the store ------------------------------------------------------------------------

def connect(tracking_uri: str | None = None) -> MlflowClient:
    """An MlflowClient on the resolved store, checked to answer; UsageError if it cannot."""
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    check_driver(uri)
    _quiet_mlflow()
    db = sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UsageError(f"cannot create {db.parent} for MLflow store {uri}: "
                             f"{err.strerror}; pass another --tracking-uri") from None
        if db.is_dir():  # MLflow would retry opening it for two minutes
            raise UsageError(f"cannot open MLflow store {uri}: {db} is a directory; pass "
                             f"the database file's path") from None
        if not db.exists() and not os.access(db.parent, os.W_OK | os.X_OK):  # the same
            raise UsageError(f"cannot create MLflow store {uri}: {db.parent} is not "
                             f"writable; pass --tracking-uri sqlite:///PATH somewhere "
                             f"writable") from None
    from sqlalchemy.exc import SQLAlchemyError  # MLflow's own dependency

    try:
        # for sqlite this opens the file and creates or migrates its tables (seconds, once)
        return call_with_retry(MlflowClient, uri)
    except MlflowException as err:
        if "migrate-filestore" in str(err):  # MLflow 3's paragraph on folder stores
            raise UsageError(f"{uri} is a folder (file) store, which MLflow no longer opens by "
                             f"default: pass --tracking-uri sqlite:///PATH, migrate it with "
                             f"`mlflow migrate-filestore`, or set MLFLOW_ALLOW_FILE_STORE=true"
                             ) from None
        raise UsageError(f"cannot open MLflow store {uri}: {first_line(err)}") from err
    except SQLAlchemyError as err:  # a file that is no database, not writable, a directory
        reason = getattr(err, "orig", None) or err
        raise UsageError(f"cannot open MLflow store {uri}: {first_line(reason)}; check the "
                         f"file or pass another --tracking-uri") from None


def is_local_artifacts(artifact_uri: str | None) -> bool:
    """Whether a run's artifacts are files on this machine (`/abs/mlruns/...`, `file:`),
    not behind a server (`mlflow-artifacts:`, `http:`) or in an object store (`s3:`)."""
    uri = artifact_uri or ""
    return uri.startswith(("/", "file:")) or not SCHEME.match(uri)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created if missing (safe when workers race to create it),
    with a sqlite store's artifacts in `mlruns/<name>/` beside the database: MLflow's own
    `./mlruns/<id>` in the working directory would split one store's artifacts across
    directories when `--tracking-uri` points elsewhere."""
    experiment = call_with_retry(client.get_experiment_by_name, name)
    if experiment is None:
        root = artifact_root(client.tracking_uri)
        location = None if root is None else str(root / _slug(name))
        try:
            return call_with_retry(client.create_experiment, name, artifact_location=location)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise UsageError(f"cannot create experiment {name!r}: {first_line(err)}") from err
            experiment = call_with_retry(client.get_experiment_by_name, name)  # a worker won
    if experiment.lifecycle_stage == "deleted":
        raise UsageError(f"experiment {name!r} is deleted; restore it with `mlflow experiments "
                         f"restore --experiment-id {experiment.experiment_id}` or pick another "
                         f"name")
    return experiment.experiment_id


def get_run(client: MlflowClient, run_id: str, what: str = "run") -> Run:
    """The run `run_id`; UsageError "unknown run id ..." if the store has no such run."""
    try:
        run = call_with_retry(client.get_run, run_id)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise UsageError(f"unknown {what} id {run_id!r} in {client.tracking_uri}; check "
                             f"the id and --tracking-uri") from err
        raise
    if run.info.lifecycle_stage == "deleted":
        raise UsageError(f"{what} {run_id!r} is deleted; restore it with `mlflow runs restore "
                         f"--run-id {run_id}` first")
    return run


def download_artifact(client: MlflowClient, run_id: str, artifact_path: str,
                      dst_dir: Path | str) -> Path | None:
    """Fetch one artifact of run `run_id` into `dst_dir`; None if it has no such file (or
    the artifact store cannot be read)."""
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    try:
        local = call_with_retry(client.download_artifacts, run_id, artifact_path, str(dst_dir))
    except (MlflowException, OSError):
        return None
    return Path(local) if Path(local).exists() else None


# ---- one run ------------------------------------------------------------------------

def _clip(value: Any, limit: int) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - len(TRUNCATED)] + TRUNCATED


class ArtifactWriteFailed(CifarctlError):
    """A file could not be written into a run's artifact folder on this machine (a full disk
    under ./mlruns, a read-only folder): one line, not the OSError's traceback."""

    def __init__(self, name: str, folder: str, err: OSError) -> None:
        super().__init__(f"cannot write {name} into the tracking store's artifact folder "
                         f"{folder}: {err.strerror or err}; free space there, or track "
                         f"elsewhere (--tracking-uri)")


class MlflowTracker(Tracker):
    """One MLflow run, written through `client` by id. Make one with `start_run`."""

    def __init__(self, client: MlflowClient, run: Run):
        self.client = client
        self.tracking_uri: str = client.tracking_uri
        self.experiment_id: str = run.info.experiment_id
        self.run_id: str = run.info.run_id
        self.artifact_uri: str = run.info.artifact_uri
        self._finished = False
        self.artifacts_failed = False  # a write into the artifact folder failed (full disk)
        self.opened_status: str | None = run.info.status  # see Tracker.opened_status
        # upload checkpoints each epoch (`training.follow`): artifacts kept off this machine
        self.checkpoints_follow: bool = not is_local_artifacts(run.info.artifact_uri)

    def _log_batch(self, size: int, **batch: list[Any]) -> None:
        """`batch` (params=, tags= or metrics=), `size` items a request (MLflow's limit)."""
        [(kind, items)] = batch.items()
        for start in range(0, len(items), size):
            call_with_retry(self.client.log_batch, self.run_id,
                            **{kind: items[start:start + size]})

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log `params` as strings, cut to MLflow's limits; a logged param cannot change."""
        items = [Param(str(k), _clip(v, MAX_PARAM_VAL_LENGTH)) for k, v in params.items()]
        try:
            self._log_batch(MAX_PARAMS_TAGS_PER_BATCH, params=items)
        except MlflowException as err:
            if "Changing param values is not allowed" not in str(err):
                raise
            raise UsageError(f"run {self.run_id} already has other values for some params "
                             f"(a run's params cannot change): {first_line(err)}") from err

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set `tags` as strings, cut to MLflow's limit; a tag may be overwritten."""
        items = [RunTag(str(k), _clip(v, MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        self._log_batch(MAX_PARAMS_TAGS_PER_BATCH, tags=items)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log all `metrics` at `step` (default 0) in one request (1000 per request)."""
        now_ms = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now_ms, int(step or 0)) for k, v in metrics.items()]
        self._log_batch(MAX_METRICS_PER_BATCH, metrics=items)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Copy a file, or a directory's contents, into the artifacts under `artifact_path`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no artifact to log at {path}")
        log = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
        self._write_artifact(path.name, log, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._write_artifact(artifact_file, self.client.log_text, text, artifact_file)

    def _write_artifact(self, name: str, log: Any, *args: Any) -> None:
        """`log(run_id, *args)`; a write the OS refuses (ENOSPC, EROFS, ...) is one line,
        `ArtifactWriteFailed`, and the run's later artifact writes are skipped, so that what
        ends the run after the error (its status: FAILED) still reaches the store instead of
        failing the same way."""
        if self.artifacts_failed:
            return  # the first failure was raised already
        try:
            call_with_retry(log, self.run_id, *args)
        except OSError as err:
            if err.errno is None:  # requests' errors are OSErrors too, without an errno
                raise
            self.artifacts_failed = True
            folder = self.artifact_uri.removeprefix("file://")
            raise ArtifactWriteFailed(name, folder, err) from None

    def log_figure(self, fig: Any, artifact_file: str) -> None:
        """Render a matplotlib figure as the PNG artifact `artifact_file`; closes the figure."""
        from cifarctl.plots import save_png

        folder, name = posixpath.split(artifact_file)
        with tempfile.TemporaryDirectory(prefix="cifarctl-fig-") as tmp:
            png = save_png(fig, Path(tmp) / name)
            self.log_artifact(png, folder or None)

    def log_dataset(self, name: str, digest: str, source: str, *, context: str = "training",
                    num_rows: int | None = None) -> None:
        """Record the dataset as the run's input, shown in the run page's "Datasets" box.

            tracker.log_dataset("cifar10-lt100", data.fingerprint, "cifar10", num_rows=12406)
        """
        # the source in the form MLflow's own dataset sources use, for the UI
        source_type, key = ("http", "url") if re.match(r"^https?://", source) else ("local", "uri")
        profile = {"fingerprint": digest}
        if num_rows is not None:
            profile["num_rows"] = int(num_rows)
        # MLflow keeps at most 36 characters of a digest; the profile keeps all of it
        dataset = Dataset(name=name, digest=digest[:MAX_DATASET_DIGEST_SIZE],
                          source_type=source_type, source=json.dumps({key: source}),
                          profile=json.dumps(profile))
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context)]
        call_with_retry(self.client.log_inputs, self.run_id, datasets=[DatasetInput(dataset, tags)])

    def download_artifact(self, artifact_path: str, dst_dir: Path | str) -> Path | None:
        return download_artifact(self.client, self.run_id, artifact_path, dst_dir)

    def logged_steps(self, key: str) -> list[int]:
        """The steps at which this run has logged metric `key`, as often as logged."""
        return [m.step for m in call_with_retry(self.client.get_metric_history, self.run_id, key)]

    def finish(self, status: str = "FINISHED") -> None:
        check_status(status)
        if self._finished:
            return
        call_with_retry(self.client.set_terminated, self.run_id, status)
        self._finished = True


def start_run(*, experiment: str, tracking_uri: str | None = None, run_name: str | None = None,
              run_id: str | None = None, parent_run_id: str | None = None,
              tags: Mapping[str, Any] | None = None,
              description: str | None = None) -> MlflowTracker:
    """Start a run in `experiment` (created if needed), or resume `run_id`, and return it.

    `parent_run_id` nests the run under its parent in the UI (tag `mlflow.parentRunId`);
    `description` is the run's description there (tag `mlflow.note.content`). Resuming sets
    the run back to RUNNING and keeps its experiment, whatever `experiment` says.
    Raises UsageError for an unreachable server, an unknown run or parent id.
    """
    client = connect(tracking_uri)
    extra = {k: _clip(v, MAX_TAG_VAL_LENGTH) for k, v in (tags or {}).items()}
    if parent_run_id is not None:
        get_run(client, parent_run_id, what="parent run")
        extra[MLFLOW_PARENT_RUN_ID] = parent_run_id
    if description is not None:
        extra[MLFLOW_RUN_NOTE] = _clip(description, MAX_TAG_VAL_LENGTH)
    if run_id is not None:
        run = get_run(client, run_id)
        call_with_retry(client.update_run, run_id, status="RUNNING", name=run_name)
        tracker = MlflowTracker(client, run)
        tracker.set_tags(extra)
        return tracker
    experiment_id = get_or_create_experiment(client, experiment)
    over_http = is_server(str(client.tracking_uri))
    if over_http:
        extra[CREATION_TAG] = uuid.uuid4().hex
    run = call_with_retry(client.create_run, experiment_id, tags=extra, run_name=run_name)
    if over_http:
        _drop_retried_twins(client, experiment_id, run.info.run_id, extra[CREATION_TAG])
    return MlflowTracker(client, run)


# MLflow's HTTP client retries every request whose answer it lost (a read timeout, a 5xx),
# POSTs included (urllib3's Retry with allowed_methods=None): a create_run the server did
# commit is then made again, and a sweep trial would have two child runs. The nonce finds the
# twins; the run the client returned is kept.
CREATION_TAG = "cifarctl.creation"


def _drop_retried_twins(client: MlflowClient, experiment_id: str, run_id: str,
                        nonce: str) -> None:
    twins = call_with_retry(client.search_runs, [experiment_id],
                            f"tags.`{CREATION_TAG}` = '{nonce}'")
    for twin in twins:
        if twin.info.run_id != run_id:
            call_with_retry(client.delete_run, twin.info.run_id)

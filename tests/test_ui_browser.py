"""`cifarctl ui` as a person sees it: a real server, a real headless Chromium (issue 9).

A tiny run is trained into a fresh store, nested under a sweep-like parent run; `cifarctl ui`
serves it as a subprocess; the REST API must return the run with its per-class metrics; then
Chromium opens the URL `cifarctl ui` printed, expands the parent, clicks through to the run
page and its confusion-matrix artifact, and the test reads what the page rendered. Screenshots
land in test-artifacts/ (git-ignored); `CIFARCTL_UPDATE_DOCS=1` also refreshes the README's
docs/mlflow-ui-run.png from this run.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands
on fd 3, replies on fd 4, JSON messages ending in a NUL byte), the transport Playwright and
Puppeteer use, so the test needs nothing but Debian's `chromium` package and the stdlib, and
it waits for what it expects to see instead of guessing a render time.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from test_ui import UiProcess, alive, listening

CHROMIUM = next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)
pytestmark = [
    pytest.mark.slow,  # ~40-60 s: a training run, a server start, a browser
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine: install "
                       "Debian's `chromium` package (.ci/run does) to run the browser test"),
]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOT = ROOT / "docs" / "mlflow-ui-run.png"
DOCS_MAX_BYTES = 300_000
VIEWPORT = (1280, 800)  # CSS pixels of the screenshots
WAIT_S = 90.0  # for any one thing to appear; the UI renders in 1-5 s on a busy 2-core machine
# Flags for a root user on a machine without a network (see the workplace's machine notes):
# without the networking ones Chromium hangs on lookups of Google's hosts at start-up.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
         "--hide-scrollbars", "--remote-debugging-pipe"]

# JavaScript: the innermost visible element whose own text is exactly `text`.
BY_TEXT = """((text) => {
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    if (n.textContent.trim() === text && n.parentElement.getClientRects().length)
      return n.parentElement;
  }
  return null;
})"""


def _high_fd(fd: int) -> int:
    """`fd` moved to a number >= 10, so mapping pipes onto fds 3 and 4 cannot collide."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Chromium:
    """A headless Chromium with one page, driven over the DevTools protocol on a pipe.

        with Chromium(log=tmp_path / "chromium.log") as page:
            page.goto("http://127.0.0.1:5000/")
            page.wait_for_text("Experiments")
            page.screenshot(tmp_path / "home.png")
    """

    def __init__(self, log: Path, viewport: tuple[int, int] = VIEWPORT):
        self.log = log
        self.profile = tempfile.mkdtemp(prefix="cifarctl-chromium-")  # fresh: no first-run state
        commands_r, commands_w = map(_high_fd, os.pipe())
        replies_r, replies_w = map(_high_fd, os.pipe())
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        args = [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}",
                f"--window-size={viewport[0]},{viewport[1]}", "about:blank"]
        # posix_spawn maps the pipe ends onto fds 3 and 4 in the child (Popen cannot) and
        # makes it a session leader, so the whole browser tree is one process group
        self.pid = os.posix_spawn(CHROMIUM, args, os.environ, setsid=True, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2),
            (os.POSIX_SPAWN_DUP2, commands_r, 3), (os.POSIX_SPAWN_DUP2, replies_w, 4)])
        for fd in (commands_r, replies_w, log_fd):
            os.close(fd)
        self._out, self._in = commands_w, replies_r
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        try:
            targets = self.send("Target.getTargets", timeout=WAIT_S)["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self._session = self.send("Target.attachToTarget", {
                "targetId": page["targetId"], "flatten": True})["sessionId"]
            self.send("Emulation.setDeviceMetricsOverride", {
                "width": viewport[0], "height": viewport[1], "deviceScaleFactor": 1,
                "mobile": False})
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        for fd in (self._out, self._in):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    # ---- the protocol ----

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Chromium exited; its log ends:\n{tail}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, timeout: float = 30.0) -> dict:
        """Send one command (to the page once attached) and return its result."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self._session:
            message["sessionId"] = self._session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)  # events and other replies are skipped
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    # ---- what a person does ----

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression in the page."""
        result = self.send("Runtime.evaluate", {"expression": expression,
                                                "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout: float = WAIT_S):
        """Poll `expression` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"the page never showed {what} within {timeout:.0f} s")
            time.sleep(0.25)

    def wait_for_text(self, text: str) -> None:
        self.wait_for(f"document.body && document.body.innerText.includes({json.dumps(text)})",
                      repr(text))

    def text(self) -> str:
        return self.evaluate("document.body.innerText")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def click(self, element: str, what: str) -> None:
        """Click the element a JavaScript expression finds, with real mouse events at its
        centre (React and Radix components react to pointer events, not to `el.click()`)."""
        x, y = self.wait_for(f"""(() => {{
            const e = {element};
            if (!e) return null;
            e.scrollIntoView({{block: "center"}});
            const r = e.getBoundingClientRect();
            return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null;
        }})()""", what)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                   "button": "left", "clickCount": 1})

    def click_text(self, text: str) -> None:
        self.click(f"{BY_TEXT}({json.dumps(text)})", repr(text))

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


# ---- the store the UI shows --------------------------------------------------------------

@pytest.fixture
def tracked_runs(mlflow_store, data_home, tmp_path):
    """A sweep-like parent run and one tiny trained child in experiment "tiny"."""
    from cifarctl.config import load_config
    from cifarctl.data.load import synthesize
    from cifarctl.data.synth import SynthSpec
    from cifarctl.names import default_run_name, describe
    from cifarctl.tracking.mlflow_tracker import start_run
    from cifarctl.training import launch

    synthesize(SynthSpec(train_per_class=30, test_per_class=10, seed=0))  # `synthetic`, tiny
    cfg = load_config(None, {
        "model.name": "vanillacnn", "data.dataset": "synthetic", "optim.epochs": 2,
        "optim.batch_size": 32, "optim.warmup": 0, "optim.steps": [5], "run.device": "cpu",
        "data.val_per_class": 5, "loss.name": "focal", "loss.beta": 0.999,
        "data.imbalance": 10, "run.experiment": "tiny"})
    parent = start_run(experiment="tiny", run_name="beta-sweep",
                       description="parent of a sweep's runs")
    child = launch(cfg, parent_run_id=parent.run_id, quiet=True,
                   checkpoint_root=tmp_path / "checkpoints")
    parent.finish("FINISHED")
    assert child.status == "FINISHED", child.message
    artifacts = Path(parent.client.get_run(child.run_id).info.artifact_uri)
    with Image.open(artifacts / "confusion_matrix.png") as image:
        confusion_size = list(image.size)
    return {"experiment_id": parent.experiment_id, "parent_id": parent.run_id,
            "run_id": child.run_id, "run_name": default_run_name(cfg),
            "description": describe(cfg), "confusion_size": confusion_size}


def _post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_runs_render_in_a_real_browser(tracked_runs, tmp_path):
    run_id, run_name = tracked_runs["run_id"], tracked_runs["run_name"]
    assert run_name == "vanillacnn-focal-b0.999-lt10-s0"
    (ARTIFACTS / "mlflow-ui-failure.png").unlink(missing_ok=True)  # from an earlier run
    ui = UiProcess("--port", "0", "--experiment", "tiny")
    try:
        url = ui.wait_ready()
        base = url.split("/#/")[0]
        port = int(base.rsplit(":", 1)[1])
        with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
            assert response.read().strip() == b"OK"

        # the REST API the UI itself calls returns the run with every per-class metric
        found = _post_json(f"{base}/ajax-api/2.0/mlflow/runs/search", {
            "experiment_ids": [tracked_runs["experiment_id"]],
            "filter": "tags.loss = 'focal' and tags.imbalance = '10'"})["runs"]
        assert [r["info"]["run_id"] for r in found] == [run_id]
        metrics = {m["key"] for m in found[0]["data"]["metrics"]}
        assert {f"test_acc_class_{i}" for i in range(10)} <= metrics
        tags = {t["key"]: t["value"] for t in found[0]["data"]["tags"]}
        assert tags["mlflow.runName"] == run_name
        assert tags["mlflow.parentRunId"] == tracked_runs["parent_id"]
        assert tags["mlflow.note.content"] == tracked_runs["description"]

        with Chromium(log=tmp_path / "chromium.log") as page:
            try:
                _browse(page, url, tracked_runs)
            except BaseException:
                page.screenshot(ARTIFACTS / "mlflow-ui-failure.png")
                raise
        tree = ui.tree
        code, rest = ui.stop(signal.SIGINT)  # Ctrl-C
    except BaseException:
        ui.kill()
        raise
    assert code == 0 and rest.strip().endswith("stopped"), "\n".join(ui.lines)
    assert not listening(port) and not alive(tree), tree

    if os.environ.get("CIFARCTL_UPDATE_DOCS") == "1":
        shutil.copyfile(ARTIFACTS / "mlflow-ui-run.png", DOCS_SCREENSHOT)
    if DOCS_SCREENSHOT.exists():
        assert DOCS_SCREENSHOT.stat().st_size < DOCS_MAX_BYTES


def _browse(page: Chromium, url: str, runs: dict) -> None:
    """What a person does with the URL `cifarctl ui --experiment tiny` printed."""
    run_name = runs["run_name"]
    # MLflow 3 opens in its GenAI view; `cifarctl ui` says to choose "Model training" once
    page.goto(url.split("#")[0])
    page.wait_for_text("Model training")
    page.click("document.querySelector('button[aria-label=Close]')", "the assistant's close")
    page.click_text("Model training")
    page.wait_for_text("Experiments")

    # the experiment's runs table: the sweep parent, its child folded under it until expanded
    page.goto(url)
    page.wait_for_text("beta-sweep")
    assert "Run Name" in page.text() and run_name not in page.text()
    page.click(f"{BY_TEXT}('beta-sweep').closest('[role=gridcell]').querySelector('button')",
               "the expander of the parent run")
    page.wait_for_text(run_name)
    page.screenshot(ARTIFACTS / "mlflow-ui-runs.png")

    # the run page: name, description, filter tags, per-class metrics, in the runs view
    page.click_text(run_name)
    page.wait_for(f"location.hash.includes('/runs/{runs['run_id']}')", "the run page's URL")
    page.wait_for_text("Description")
    page.wait_for_text("test_acc_class_0")
    page.wait_for_text("beta-sweep")  # "Parent run", the last field to load
    text = page.text()
    assert run_name in text and "Model metrics" in text and "Evaluation runs" not in text
    assert runs["description"].replace("`", "") in text  # markdown: `focal` is code
    for tag in ("loss", "focal", "beta", "0.999", "imbalance", "seed"):
        assert tag in text, tag
    page.screenshot(ARTIFACTS / "mlflow-ui-run.png")

    # an image artifact previews: the PNG itself, decoded at its size (width, height) on disk
    page.click_text("Artifacts")
    page.click_text("confusion_matrix.png")
    width, height = runs["confusion_size"]
    page.wait_for(f"[...document.images].some(i => i.complete && i.naturalWidth === {width} "
                  f"&& i.naturalHeight === {height})",
                  f"the confusion matrix decoded at {width}x{height} px")
    page.screenshot(ARTIFACTS / "mlflow-ui-artifact.png")

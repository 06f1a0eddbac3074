"""Flower watching a real askq worker: task names, arguments, secrets, authentication, and the
tasks page in a real (headless) browser.

The Flower and chromium helpers come from scripts/flower_screenshot.py, the script that takes
docs/flower-tasks.png, so the documented screenshot and this test drive Flower the same way.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from producer.local_redis import free_port
from tests.conftest import ASSISTANTS_ONLY, ROOT, Askq, wait_until


def _load_script() -> ModuleType:
    path = ROOT / "scripts" / "flower_screenshot.py"
    spec = importlib.util.spec_from_file_location("flower_screenshot", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fs = _load_script()

ASKQ_TASKS = {"askq.start", "askq.poll", "askq.act", "askq.cancel"}
FAKE_KEY = f"sk-askq-fake-{uuid.uuid4().hex}"
"""Recognisable: it must reach the worker's settings and appear nowhere in Flower."""
MARKER = f"zebra{uuid.uuid4().hex[:8]}"
"""Part of every question: question text must not travel in task messages either."""
AUTH = ("ops", f"pw-{uuid.uuid4().hex[:12]}")

# Flower sees Celery tasks, which are the same whichever protocol the jobs speak.
pytestmark = ASSISTANTS_ONLY


@pytest.fixture
def watched(make_askq: Callable[..., Askq], tmp_path: Path) -> Iterator[tuple[Askq, Any]]:
    """A worker holding FAKE_KEY, and Flower (basic auth) already receiving its events."""
    deployment = make_askq(tool_modules="worker.builtin_tools")
    worker = deployment.start_worker(ASKQ_API_KEY=FAKE_KEY)
    environ = Path(f"/proc/{worker.process.pid}/environ")
    if environ.exists():  # the key really is in the worker's settings
        assert FAKE_KEY.encode() in environ.read_bytes()
    flower = fs.Flower(
        deployment.env(ASKQ_API_KEY=FAKE_KEY), free_port(), tmp_path / "flower.log", AUTH
    )
    try:
        flower.wait_ready()
        fs.wait_for_events(flower, deployment.client)
        yield deployment, flower
    finally:
        flower.stop()


def test_flower_shows_askq_tasks_by_name_with_only_a_job_id(
    watched: tuple[Askq, Any],
) -> None:
    deployment, flower = watched
    questions = [f"What is {i} * 11? ({MARKER})" for i in range(5)]
    questions.append(f'Use a tool ({MARKER}) [tool:calculate {{"expression": "6 * 7"}}]')
    questions.append(f"[fail] this run fails ({MARKER})")
    batch_id = deployment.client.submit_batch(questions)
    deployment.client.wait(batch_id, timeout=60)
    job_ids = deployment.client.batch_store.batch_job_ids(batch_id)
    failing = job_ids[-1]
    job_ids = job_ids[:-1]
    answers = [r.answer for r in deployment.client.results(batch_id) if r.answer]

    def every_job_seen() -> dict[str, dict[str, Any]] | None:
        tasks: dict[str, dict[str, Any]] = flower.tasks()
        seen = {(t.get("name"), t.get("args"), t.get("state")) for t in tasks.values()}
        for job_id in job_ids:
            for name in ("askq.start", "askq.poll"):
                if (name, repr([job_id]), "SUCCESS") not in seen:
                    return None
        return tasks

    # each task's result says what it did to its job: a finished job's last poll says so,
    # and a failed job is found by searching the results for "failed"
    def outcomes_seen() -> bool:
        results = " ".join(str(t.get("result")) for t in flower.tasks().values())
        return all(f"'{job_id}': 'completed" in results for job_id in job_ids)

    wait_until(outcomes_seen, 30, what="Flower to show each job's outcome")
    found = flower.http.get("/api/tasks", params={"search": "result:failed"}).json()
    assert any(failing in str(t.get("result")) for t in found.values()), found
    assert all("failed" in str(t.get("result")) for t in found.values())
    assert "'running, poll in " in json.dumps(flower.tasks())

    tasks = wait_until(every_job_seen, 30, what="Flower to show every job's tasks")
    ours = [t for t in tasks.values() if t.get("name") in ASKQ_TASKS]
    assert {t["name"] for t in ours} >= {"askq.start", "askq.poll", "askq.act"}
    tool_job = job_ids[-1]
    assert any(t["name"] == "askq.act" and t["args"] == repr([tool_job]) for t in ours)
    batch_args = {repr([job_id]) for job_id in job_ids}
    batch_tasks = [t for t in tasks.values() if t.get("args") in batch_args]
    assert len(batch_tasks) >= 2 * len(job_ids)
    for task in batch_tasks:
        assert task["name"] in ASKQ_TASKS, task
        assert task["kwargs"] == "{}", task
        assert task["routing_key"] == task["name"], task  # one queue per task
    for task in tasks.values():
        # Every task Flower saw is an askq task whose one argument is a job id (or, packed
        # under load, a list of them). Name and arguments travel in the task-sent/received
        # events: a warm-up task already sent when Flower subscribed shows neither.
        assert task["name"] in (ASKQ_TASKS | {None}), task
        if task["args"] is not None:
            (argument,) = json.loads(task["args"].replace("'", '"'))
            ids = argument if isinstance(argument, list) else [argument]
            assert all(i.startswith("job_") for i in ids), task

    # the details page's API, the task types and the workers' view: no secret, no question
    one = next(t for t in ours if t["name"] == "askq.start")
    info = flower.http.get(f"/api/task/info/{one['uuid']}")
    assert info.status_code == 200 and info.json()["args"] == one["args"]
    types = flower.http.get("/api/task/types").json()["task-types"]
    assert set(types) <= ASKQ_TASKS and "askq.start" in types
    workers = flower.http.get("/api/workers", params={"refresh": "true"})
    assert workers.status_code == 200
    (hostname,) = [name for name in workers.json() if name.startswith("test0@")]
    registered = workers.json()[hostname].get("registered", [])
    assert set(registered) >= ASKQ_TASKS, registered
    for text in (json.dumps(tasks), info.text, workers.text, json.dumps(found)):
        assert FAKE_KEY not in text
        assert MARKER not in text
        assert not any(answer in text for answer in answers)


def test_flower_api_needs_auth_and_health_and_metrics_do_not(
    watched: tuple[Askq, Any],
) -> None:
    deployment, flower = watched
    base = flower.url
    for path in ("/api/tasks", "/api/workers", "/api/task/types", "/tasks", "/"):
        assert httpx.get(base + path, timeout=10).status_code == 401, path
        wrong = httpx.get(base + path, auth=(AUTH[0], "wrong"), timeout=10)
        assert wrong.status_code == 401, path
    assert flower.http.get("/api/tasks").status_code == 200

    # open to anyone who can reach the port: why Flower stays on a private network
    health = httpx.get(base + "/healthcheck", timeout=10)
    assert health.status_code == 200 and health.text == "OK"
    deployment.client.wait(deployment.client.ask("What is 3 + 4?"), timeout=30)

    def flower_metrics() -> str | None:
        metrics = httpx.get(base + "/metrics", timeout=10)
        assert metrics.status_code == 200
        return metrics.text if 'task="askq.poll"' in metrics.text else None

    # task names and worker names, not arguments
    text = wait_until(flower_metrics, 20, what="askq tasks in Flower's /metrics")
    assert FAKE_KEY not in text and "job_" not in text


def test_flower_tasks_page_renders_askq_tasks_in_chromium(
    watched: tuple[Askq, Any], tmp_path: Path
) -> None:
    binary = fs.find_chromium()
    if binary is None:
        pytest.skip("no chromium on PATH (apt-get install -y chromium) for the browser check")
    deployment, flower = watched
    batch_id = deployment.client.submit_batch([f"What is {i} - 1?" for i in range(4)])
    deployment.client.wait(batch_id, timeout=60)
    last = deployment.client.batch_store.batch_job_ids(batch_id)[-1]
    wait_until(lambda: flower.shows(last), 30, what="Flower to show the batch")
    known = set(flower.tasks())

    # the page's table is filled by JavaScript from Flower's API: the DOM after scripts ran
    dom = fs.chromium(binary, fs.authed_url(flower, "/tasks"), "--dump-dom")
    assert "askq.poll" in dom or "askq.start" in dom, dom[-2000:]
    assert any(task_id in dom for task_id in known), "no task of the API in the page"
    assert FAKE_KEY not in dom

    # without credentials headless chromium meets the basic-auth challenge and shows nothing
    anonymous = fs.chromium(binary, f"{flower.url}/tasks", "--dump-dom")
    assert "askq." not in anonymous
    assert not any(task_id in anonymous for task_id in known)

    shot = tmp_path / "tasks.png"
    fs.chromium(binary, fs.authed_url(flower, "/tasks"), f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a rendered table, not a blank page

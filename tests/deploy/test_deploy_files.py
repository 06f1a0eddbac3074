"""Offline checks of the deployment files: docker-compose.yml, Dockerfile, deploy/k8s/.

No Docker, no cluster and no network: docker-compose.yml is validated against the compose-spec
JSON schema that `check-jsonschema` ships, the core Kubernetes objects against the schemas that
`kubernetes-validate` ships (strict: unknown fields fail), and the KEDA objects against
tests/deploy/schemas/keda-v1alpha1.json. On top of the schemas, the promises that matter to an
operator: Redis durable and password-protected, Flower behind auth, workers scalable and
drained gracefully, liveness from the heartbeat file, KEDA watching exactly the askq queues,
secrets only in Secrets. Commands are checked against the project itself (the Celery app, the
`askq` CLI) when those exist; such a check is skipped, with the reason, while they do not.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / "deploy" / "askq.env.example"
K8S_DIR = ROOT / "deploy" / "k8s"
KEDA_SCHEMA = Path(__file__).parent / "schemas" / "keda-v1alpha1.json"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

QUEUES = frozenset({"askq.start", "askq.poll", "askq.act", "askq.cancel", "askq.deliver"})
HEARTBEAT_FILE = "/tmp/askq-heartbeat"
# The contract: every askq task finishes in well under this.
LONGEST_TASK_S = 60
# Used for the grace period arithmetic until the Celery app exists to tell the real value.
ASSUMED_SOFT_SHUTDOWN_S = 30.0
SHUTDOWN_MARGIN_S = 10
# Oldest Kubernetes minor the manifests must be valid for.
KUBERNETES_VERSION = "1.29"
ASKQ_IMAGE = "askq"
SECRET_NAME = re.compile(r"KEY|PASSWORD|PASSWD|SECRET|TOKEN|AUTH", re.IGNORECASE)


# --- loading -------------------------------------------------------------------------------


class MissingVariable(Exception):
    """A `${VAR:?message}` / `${VAR?message}` whose variable is not set."""


_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Docker Compose's variable interpolation (`$$`, `$VAR`, `${VAR}`, `${VAR:-default}`,
    `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`), applied to
    every string value of a loaded compose document."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        is_set = name in env
        is_filled = is_set and env[name] != ""
        if op in (":-", "-"):
            return env[name] if (is_filled if op == ":-" else is_set) else arg
        if op in (":?", "?"):
            if not (is_filled if op == ":?" else is_set):
                raise MissingVariable(f"{name}: {arg}")
            return env[name]
        if op in (":+", "+"):
            return arg if (is_filled if op == ":+" else is_set) else ""
        return env.get(name, "")

    return _INTERPOLATION.sub(substitute, value)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@cache
def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@cache
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@cache
def compose() -> dict[str, Any]:
    """docker-compose.yml as Compose sees it with the example env file as `.env`."""
    return interpolate(raw_compose(), env_example())


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.rglob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_docs() -> tuple[tuple[str, dict[str, Any]], ...]:
    docs = []
    for path in k8s_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((str(path.relative_to(ROOT)), doc))
    return tuple(docs)


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_docs() if doc["kind"] == kind]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in k8s_objects(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s_objects("Deployment") + k8s_objects("StatefulSet"):
        yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def askq_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs():
        for container in spec["containers"]:
            if container["image"].split(":")[0] == ASKQ_IMAGE:
                yield name, container


def worker_deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "askq-worker")


def worker_container() -> dict[str, Any]:
    (container,) = worker_deployment()["spec"]["template"]["spec"]["containers"]
    return container


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def secret_keys() -> set[str]:
    secret = k8s_object("Secret", "askq-secrets")
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def duration_s(text: str) -> float:
    """A Compose duration (`1m30s`, `120s`, `90`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)?", str(text))
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


def command_of(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def pairs(argv: list[str]) -> dict[str, str]:
    return dict(itertools.pairwise(argv))


# --- the project's own commands ------------------------------------------------------------


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASKQ_", "FLOWER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


_APP_PROBE = """
import json
from celery.app.utils import find_app
app = find_app("worker")
app.loader.import_default_modules()
queues = app.conf.task_queues or ()
print(json.dumps({
    "queues": sorted(q.name for q in queues),
    "tasks": sorted(name for name in app.tasks if name.startswith("askq.")),
    "soft_shutdown_s": float(app.conf.worker_soft_shutdown_timeout or 0),
}))
"""


@cache
def celery_app_facts() -> dict[str, Any] | None:
    """Queues, askq task names and soft shutdown timeout of the `celery -A worker` app, or None
    while worker/ is not yet a package with a Celery app in it."""
    if not (ROOT / "worker" / "__init__.py").exists():
        return None
    result = subprocess.run(
        [sys.executable, "-c", _APP_PROBE],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"`celery -A worker` cannot load the app:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def require_celery_app() -> dict[str, Any]:
    facts = celery_app_facts()
    if facts is None:
        pytest.skip("worker/__init__.py does not exist yet: no Celery app to check against")
    return facts


def askq_entry_point() -> str:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts["askq"]


@cache
def askq_help(subcommand: str) -> str:
    """`askq SUBCOMMAND --help`, run from this tree through the console script's entry point."""
    module, _, func = askq_entry_point().partition(":")
    code = f"import sys; sys.argv[0] = 'askq'; from {module} import {func} as m; sys.exit(m())"
    result = subprocess.run(
        [sys.executable, "-c", code, subcommand, "--help"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (
        f"`askq {subcommand} --help` exited {result.returncode}:\n{result.stdout}{result.stderr}"
    )
    return result.stdout


def all_commands() -> list[tuple[str, list[str]]]:
    commands = [
        (f"docker-compose.yml service {name}", command_of(service))
        for name, service in raw_compose()["services"].items()
        if "command" in service and "image" in service and "askq" in service["image"]
    ]
    cmd = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE.read_text(), re.MULTILINE)
    assert cmd, "Dockerfile has no exec-form CMD"
    commands.append(("Dockerfile CMD", json.loads(cmd[1])))
    for name, container in askq_containers():
        argv = list(container.get("command", [])) + list(container.get("args", []))
        commands.append((f"k8s {name}/{container['name']}", argv))
    return commands


@pytest.mark.parametrize(("where", "argv"), all_commands(), ids=lambda v: str(v))
def test_command_exists_in_project(where: str, argv: list[str]) -> None:
    assert argv, f"{where}: empty command"
    if argv[0] == "celery":
        assert argv[1:3] == ["-A", "worker"], f"{where}: the app is `celery -A worker`"
        subcommand = argv[3]
        assert subcommand in {"worker", "flower"}, f"{where}: unexpected `celery {subcommand}`"
        dependencies = " ".join(
            tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        )
        assert "celery" in dependencies
        if subcommand == "flower":
            assert "flower" in dependencies, "flower must be a dependency of the image"
        assert (ROOT / "worker").is_dir(), "the worker package is missing"
        facts = require_celery_app()
        assert facts is not None
    elif argv[0] == "askq":
        assert askq_entry_point() == "producer.cli:main"
        subcommand = argv[1]
        assert subcommand in {"emulator", "metrics", "batch"}, f"{where}: unknown {subcommand}"
        if not (ROOT / "producer" / "cli.py").exists():
            pytest.skip("producer/cli.py does not exist yet: cannot run `askq --help`")
        help_text = askq_help(subcommand)
        for option in (arg.split("=")[0] for arg in argv[2:] if arg.startswith("--")):
            assert option in help_text, f"{where}: `askq {subcommand}` has no {option}"
    else:
        pytest.fail(f"{where}: unexpected program {argv[0]!r}")


def test_celery_app_declares_every_queue_and_task() -> None:
    facts = require_celery_app()
    assert set(facts["queues"]) >= QUEUES, "the worker must declare every askq queue"
    assert set(facts["tasks"]) >= QUEUES, "task names are askq.start/poll/act/cancel/deliver"


def soft_shutdown_s() -> float:
    facts = celery_app_facts()
    return facts["soft_shutdown_s"] if facts else ASSUMED_SOFT_SHUTDOWN_S


def grace_budget_s() -> float:
    return LONGEST_TASK_S + soft_shutdown_s() + SHUTDOWN_MARGIN_S


# --- docker compose ------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(ref.read_text())


def test_compose_file_matches_compose_spec() -> None:
    schema = compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    errors = sorted(validator_class(schema).iter_errors(compose()), key=str)
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_compose_has_every_service() -> None:
    assert set(compose()["services"]) >= {
        "redis",
        "emulator",
        "worker",
        "flower",
        "metrics",
        "demo",
    }


@pytest.mark.parametrize("variable", ["REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "ASKQ_API_KEY"])
def test_compose_refuses_to_start_without_secret(variable: str) -> None:
    env = {k: v for k, v in env_example().items() if k != variable}
    with pytest.raises(MissingVariable, match=variable):
        interpolate(raw_compose(), env)


def test_env_example_marks_secrets_as_placeholders() -> None:
    env = env_example()
    assert "REPLACE-ME" in env["REDIS_PASSWORD"]
    assert "REPLACE-ME" in env["FLOWER_BASIC_AUTH"]
    assert env["ASKQ_API_KEY"], "the emulator accepts any key, but one must be set"


def test_compose_holds_no_literal_secret() -> None:
    services = raw_compose()["services"]
    redis_args = pairs(command_of(services["redis"]))
    assert redis_args["--requirepass"].startswith("${REDIS_PASSWORD")
    askq_env = services["worker"]["environment"]
    assert "${REDIS_PASSWORD" in askq_env["ASKQ_REDIS_URL"]
    assert askq_env["ASKQ_API_KEY"].startswith("${ASKQ_API_KEY")
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH")
    for name, service in services.items():
        for arg in command_of(service):
            if name != "redis":
                assert "PASSWORD" not in arg and "API_KEY" not in arg, f"{name}: {arg}"


def test_redis_is_durable_and_password_protected() -> None:
    redis = compose()["services"]["redis"]
    assert redis["image"].split(":")[0] == "redis" and redis["image"].startswith("redis:7")
    args = pairs(command_of(redis))
    assert args.get("--appendonly") == "yes"
    assert args.get("--appendfsync") == "everysec"
    assert args.get("--maxmemory-policy") == "noeviction"
    password = env_example()["REDIS_PASSWORD"]
    assert args.get("--requirepass") == password
    # The healthcheck authenticates: redis-cli takes the password from REDISCLI_AUTH.
    assert redis["environment"]["REDISCLI_AUTH"] == password
    assert "redis-cli" in " ".join(redis["healthcheck"]["test"])
    assert any(v.split(":")[1] == "/data" for v in redis["volumes"]), "no volume on /data"
    assert "redis-data" in compose()["volumes"]


def test_flower_uses_basic_auth_and_publishes_5555() -> None:
    flower = compose()["services"]["flower"]
    assert command_of(flower)[:4] == ["celery", "-A", "worker", "flower"]
    user, _, password = flower["environment"]["FLOWER_BASIC_AUTH"].partition(":")
    assert user and password
    assert any(str(port).endswith(":5555") for port in flower["ports"])


def test_askq_services_share_the_settings() -> None:
    services = compose()["services"]
    for name in ("worker", "flower", "metrics", "demo"):
        env = services[name]["environment"]
        assert env["ASKQ_REDIS_URL"] == services["worker"]["environment"]["ASKQ_REDIS_URL"]
        assert (
            env["ASKQ_REDIS_URL"].startswith("redis://:")
            and "@redis:6379/" in env["ASKQ_REDIS_URL"]
        )
        assert env["ASKQ_API_BASE"] == "http://emulator:8787/v1"
        assert env["ASKQ_API_KEY"], f"{name}: API key required off loopback"


def test_worker_is_scalable_and_drains_gracefully() -> None:
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker, "container_name breaks --scale"
    assert "ports" not in worker, "a published port breaks --scale"
    assert worker["restart"] in {"always", "unless-stopped", "on-failure"}
    assert worker.get("stop_signal", "SIGTERM") == "SIGTERM"
    assert duration_s(worker["stop_grace_period"]) >= grace_budget_s()
    assert worker["environment"]["ASKQ_HEARTBEAT_FILE"] == HEARTBEAT_FILE
    assert HEARTBEAT_FILE in " ".join(worker["healthcheck"]["test"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_workers_consume_every_queue() -> None:
    for where, argv in all_commands():
        if argv[:4] == ["celery", "-A", "worker", "worker"]:
            assert not any(a in {"-Q", "--queues", "-X", "--exclude-queues"} for a in argv), where
            assert not any(a.startswith(("--queues=", "-Q", "--exclude-queues=")) for a in argv)


def test_demo_profile_runs_the_sample_batch() -> None:
    demo = compose()["services"]["demo"]
    assert demo["profiles"] == ["demo"]
    assert command_of(demo) == ["askq", "batch", "/app/examples/questions.txt", "--wait"]
    assert demo.get("restart", "no") == "no"


def test_sample_batch_is_in_the_project() -> None:
    if not (ROOT / "examples").exists():
        pytest.skip("examples/ is not shipped yet (the lead adds examples/questions.txt)")
    assert (ROOT / "examples" / "questions.txt").is_file()


# --- image ---------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_image_without_secrets() -> None:
    text = DOCKERFILE.read_text()
    instructions = [
        line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()
    ]
    instructions = [line for line in instructions if not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    assert re.search(r"pip install --no-cache-dir \.(\s|$)", text)
    assert re.search(r"^COPY examples/ /app/examples/$", text, re.MULTILINE)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"0", "root"}
    for line in instructions:
        if line.startswith(("ENV ", "ARG ")):
            assert not SECRET_NAME.search(line), f"secret-looking build setting: {line}"


def test_dockerignore_keeps_env_files_out() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: ignore everything, then re-include what the build needs"
    assert not any(line.startswith("!") and ".env" in line for line in lines)
    assert "**/.env" in lines


# --- Kubernetes ----------------------------------------------------------------------------


@cache
def keda_validator() -> jsonschema.protocols.Validator:
    schema = json.loads(KEDA_SCHEMA.read_text())
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema)


@pytest.mark.parametrize(
    ("path", "doc"),
    k8s_docs(),
    ids=[f"{path}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in k8s_docs()],
)
def test_manifest_is_valid(path: str, doc: dict[str, Any]) -> None:
    assert "namespace" not in doc["metadata"], f"{path}: manifests are namespace-agnostic"
    if doc["apiVersion"].startswith("keda.sh/"):
        errors = sorted(keda_validator().iter_errors(doc), key=str)
        assert not errors, "\n".join(
            f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
        )
        behavior = doc["spec"].get("advanced", {}).get("horizontalPodAutoscalerConfig", {})
        if "behavior" in behavior:
            hpa = {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "keda-hpa"},
                "spec": {
                    "scaleTargetRef": doc["spec"]["scaleTargetRef"],
                    "maxReplicas": doc["spec"].get("maxReplicaCount", 100),
                    "behavior": behavior["behavior"],
                },
            }
            kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)
    else:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            where = "/".join(map(str, error.absolute_path))
            pytest.fail(f"{path} {doc['kind']}: {where}: {error.message}")


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in K8S_DIR.rglob("kustomization.yaml"))


@pytest.mark.parametrize("directory", kustomization_dirs(), ids=lambda p: p.name)
def test_kustomization_lists_every_file(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization, "namespace-agnostic: the operator chooses it"
    listed = list(kustomization["resources"])
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    present = {p.name for p in directory.glob("*.yaml") if p.name != "kustomization.yaml"}
    assert set(listed) == present, f"listed {sorted(listed)} but found {sorted(present)}"


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: kustomize build not run (schemas still checked)")
    for directory in kustomization_dirs():
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        built = [d for d in yaml.safe_load_all(result.stdout) if d]
        expected = [doc for path, doc in k8s_docs() if Path(ROOT / path).parent == directory]
        assert len(built) == len(expected)
        if directory == K8S_DIR:
            images = {
                c["image"]
                for d in built
                if d["kind"] == "Deployment"
                for c in d["spec"]["template"]["spec"]["containers"]
            }
            assert images == {"askq:0.1.0"}, images


def test_scaled_object_watches_exactly_the_askq_queues() -> None:
    scaled = k8s_object("ScaledObject", "askq-worker")
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target.get("kind", "Deployment"), target["name"]) == ("Deployment", "askq-worker")
    triggers = spec["triggers"]
    assert all(t["type"] == "redis" for t in triggers)
    assert {t["metadata"]["listName"] for t in triggers} == QUEUES
    assert len(triggers) == len(QUEUES)
    # Summed, not the max of them: the formula names every trigger once.
    names = {t["name"] for t in triggers}
    formula = spec["advanced"]["scalingModifiers"]["formula"]
    assert set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", formula)) == names
    # Zero workers would mean no pump publishing due polls: the backlog would never show.
    assert spec["minReplicaCount"] >= 1
    assert spec["maxReplicaCount"] > spec["minReplicaCount"]
    redis_url = k8s_object("Secret", "askq-secrets")["stringData"]["ASKQ_REDIS_URL"]
    database = redis_url.rsplit("/", 1)[-1] or "0"
    for trigger in triggers:
        assert trigger["metadata"].get("databaseIndex", "0") == database
        auth = k8s_object("TriggerAuthentication", trigger["authenticationRef"]["name"])
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert {"address", "password"} <= set(refs)
        for ref in refs.values():
            assert ref["name"] == "askq-secrets" and ref["key"] in secret_keys()


def test_scaled_object_queues_match_the_celery_app() -> None:
    facts = require_celery_app()
    listed = {
        t["metadata"]["listName"]
        for t in k8s_object("ScaledObject", "askq-worker")["spec"]["triggers"]
    }
    assert listed == set(facts["queues"]) & QUEUES == QUEUES


def test_worker_liveness_reads_the_heartbeat_file() -> None:
    container = worker_container()
    env = container_env(container)
    assert env["ASKQ_HEARTBEAT_FILE"]["value"] == HEARTBEAT_FILE
    for probe in ("startupProbe", "livenessProbe"):
        assert set(container[probe]) & {"httpGet", "tcpSocket", "grpc"} == set(), probe
        assert HEARTBEAT_FILE in " ".join(container[probe]["exec"]["command"]), probe
    # A read-only root needs a writable /tmp for the heartbeat.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in worker_deployment()["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_worker_grace_period_covers_a_task_and_the_soft_shutdown() -> None:
    spec = worker_deployment()["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= grace_budget_s()
    assert "replicas" not in worker_deployment()["spec"], "KEDA owns the replica count"


def test_worker_has_resources_and_runs_as_non_root() -> None:
    container = worker_container()
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    for name, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name


def test_secret_holds_the_secrets_and_configmap_does_not() -> None:
    secret = k8s_object("Secret", "askq-secrets")
    assert {"ASKQ_API_KEY", "ASKQ_REDIS_URL", "FLOWER_BASIC_AUTH", "REDIS_PASSWORD"} <= set(
        secret["stringData"]
    )
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{key}: ship placeholders only, clearly marked"
    config = k8s_object("ConfigMap", "askq-config")["data"]
    for key, value in config.items():
        assert not SECRET_NAME.search(key), f"ConfigMap holds a secret-looking key {key}"
        assert key != "ASKQ_REDIS_URL" and not re.search(r"//[^/]*:[^/]*@", value), key


def test_env_references_resolve_and_secrets_come_from_the_secret() -> None:
    configmaps = {d["metadata"]["name"]: d for d in k8s_objects("ConfigMap")}
    for name, spec in pod_specs():
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                assert "secretRef" not in source, f"{name}: pick secret keys one by one"
                assert source["configMapRef"]["name"] in configmaps, name
            for item in container.get("env", []):
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "askq-secrets" and ref["key"] in secret_keys()
                elif SECRET_NAME.search(item["name"]):
                    pytest.fail(f"{name}: {item['name']} is a literal value, not a secretKeyRef")
            for arg in container.get("command", []) + container.get("args", []):
                assert "REPLACE-ME" not in arg and "://" not in arg, f"{name}: {arg}"


def test_askq_containers_share_settings() -> None:
    for name, container in askq_containers():
        env = container_env(container)
        assert env["ASKQ_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "ASKQ_REDIS_URL"
        assert env["ASKQ_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "ASKQ_API_KEY", name
        assert {"configMapRef": {"name": "askq-config"}} in container["envFrom"], name


def test_flower_has_basic_auth_and_stays_inside_the_cluster() -> None:
    deployment = k8s_object("Deployment", "askq-flower")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["celery", "-A", "worker", "flower"]
    auth = container_env(container)["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
    assert auth == {"name": "askq-secrets", "key": "FLOWER_BASIC_AUTH"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthcheck"
    service = k8s_object("Service", "askq-flower")
    # /metrics is unauthenticated: never a NodePort or LoadBalancer.
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert deployment["spec"]["replicas"] == 1, "Flower's state is per process"


def test_redis_example_is_durable() -> None:
    statefulset = k8s_object("StatefulSet", "askq-redis")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    args = pairs(container["args"])
    assert args["--appendonly"] == "yes"
    assert args["--appendfsync"] == "everysec"
    assert args["--maxmemory-policy"] == "noeviction"
    assert args["--requirepass"] == "$(REDIS_PASSWORD)"
    assert statefulset["spec"]["volumeClaimTemplates"]


# --- docs ----------------------------------------------------------------------------------


def test_deploy_doc_covers_the_operations() -> None:
    text = DEPLOY_DOC.read_text()
    for needle in (
        "docker compose up -d --scale worker=4",
        "--profile demo",
        "kubectl apply -k deploy/k8s",
        "ScaledObject",
        "terminationGracePeriodSeconds",
        "noeviction",
        "Sentinel",
        "bytes per job",
    ):
        assert needle in text, needle

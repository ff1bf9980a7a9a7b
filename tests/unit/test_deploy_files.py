"""The deploy files match the code: queues that exist and are scaled, no volume shared by
the API and workers (nothing may assume a shared disk), settings that exist, migrations
run to every head, probes on routes that exist."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from pipelines.keys import Keys
from schemas.jobs import JOB_ROUTES, QUEUE_GROUPS, QueueGroup
from schemas.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _k8s(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc]


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # type: ignore[no-any-return]


def test_compose_runs_two_api_replicas_and_two_worker_hosts_sharing_no_volume() -> None:
    services = _compose()["services"]
    for name in ("web", "worker"):
        assert services[name]["deploy"]["replicas"] == 2
        assert "volumes" not in services[name], f"{name} mounts a volume"
    env = services["web"]["environment"]
    assert env["FILE_STORE_URL"].startswith("${FILE_STORE_URL:-postgres}")
    assert services["migrate"]["command"][-2:] == ["upgrade", "heads"]


def test_every_environment_variable_the_deploy_files_set_is_a_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields} | {
        alias.upper() for f in Settings.model_fields.values()
        if isinstance(alias := f.validation_alias, str)}
    compose_env = set(_compose()["x-app"]["environment"])
    secret_env = set(_k8s("secret.example.yaml")[0]["stringData"])
    # REDIS_ADDRESS is KEDA's (its Redis scaler reads host:port, not URLs).
    assert (compose_env | secret_env) - {"REDIS_ADDRESS"} <= fields
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*") if p.is_file())
    assert "FILE_STORE_DIR" not in text  # the local directory store is for development only


def test_every_queue_is_consumed_by_one_worker_deployment_and_scaled_on_its_backlog() -> None:
    deployments = {d["metadata"]["name"]: d for d in _k8s("worker.yaml")}
    commands = {name: d["spec"]["template"]["spec"]["containers"][0]["command"]
                for name, d in deployments.items()}

    def count(command: list[str], flag: str) -> int:
        return int(command[command.index(flag) + 1]) if flag in command else -1

    assert count(commands["switchyard-worker"], "--cpu-processes") == 0
    assert count(commands["switchyard-worker-cpu"], "--processes") == 0
    for deployment in deployments.values():
        assert "volumes" not in deployment["spec"]["template"]["spec"]
    target = {QueueGroup.io: "switchyard-worker", QueueGroup.cpu: "switchyard-worker-cpu"}
    triggers = {obj["spec"]["scaleTargetRef"]["name"]: [
        t["metadata"]["listName"] for t in obj["spec"]["triggers"]] for obj in _k8s("keda.yaml")}
    namespace = Keys(Settings.model_fields["switchyard_namespace"].default).dramatiq_namespace
    for queue in {*QUEUE_GROUPS, *(r.queue_name for r in JOB_ROUTES.values())}:
        assert f"{namespace}:{queue}" in triggers[target[QUEUE_GROUPS[queue]]], queue
    scaled = {name.rsplit(":", 1)[1] for names in triggers.values() for name in names}
    assert scaled <= set(QUEUE_GROUPS), "KEDA scales a queue no job uses"


def test_the_api_pods_run_every_migration_head_and_probe_routes_that_exist() -> None:
    api = next(d for d in _k8s("api.yaml") if d["kind"] == "Deployment")
    pod = api["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["command"][-2:] == ["upgrade", "heads"]
    assert "volumes" not in pod
    container = pod["containers"][0]
    source = (Path(__file__).resolve().parents[2] / "api" / "routes" / "system.py").read_text()
    for probe in ("livenessProbe", "readinessProbe"):
        path = container[probe]["httpGet"]["path"]
        assert re.search(rf'Route\("{re.escape(path)}"', source), path

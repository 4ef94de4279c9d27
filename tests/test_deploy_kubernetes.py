"""The Kubernetes manifests under deploy/kubernetes, checked statically: no cluster runs here.

Every object is validated (strictly: an unknown field fails) by kubernetes-validate against the API
schemas of the oldest and the newest Kubernetes it bundles, as ``kubectl apply -k`` would send it;
every container of the ranktune image runs a command the real CLI parses; names, ports, probes,
secrets and images agree with each other, with the app and with docker-compose.yml.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

from ranktune.service.app import create_app
from ranktune.service.settings import Settings
from tests.deploy_cli import is_real_variable, parse_cli
from tests.deploy_files import (
    KUBERNETES,
    README,
    ROOT,
    SECRET_EXAMPLE,
    command_lines,
    containers,
    dockerfile_uid,
    find,
    interpolate,
    kustomization,
    kustomization_files,
    load_compose,
    load_documents,
    pod_spec,
    render,
    split_image,
)

APP = KUBERNETES / "app"
OPTUNA = KUBERNETES / "optuna"
# With PostgreSQL in the cluster, with a database elsewhere, and the optional Optuna mirror.
ENTRY_POINTS = (KUBERNETES, APP, OPTUNA)
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
PLACEHOLDER = "CHANGE-ME"
README_SECTION = "## Deploy on Kubernetes / Slurm"


def everything() -> list[dict[str, Any]]:
    return render(KUBERNETES) + render(OPTUNA)


def ranktune_containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, container) for every container of the ranktune image."""
    compose_image = split_image(interpolate(load_compose()["services"]["api"]["image"]))[0]
    return [
        (obj["metadata"]["name"], c)
        for obj in objects
        for c in containers(obj)
        if split_image(c["image"])[0] == compose_image
    ]


def container(objects: list[dict[str, Any]], kind: str, name: str, container_name: str) -> dict[str, Any]:
    found = [c for c in containers(find(objects, kind, name)) if c["name"] == container_name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} containers named {container_name}"
    return found[0]


def runs_pods(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a workload; fails for an object that runs no pods."""
    spec = pod_spec(obj)
    assert spec is not None, f"{obj['kind']}/{obj['metadata']['name']} runs no pods"
    return spec


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"]["labels"]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def secret_ref(variable: dict[str, Any]) -> tuple[str, str]:
    ref = variable.get("valueFrom", {}).get("secretKeyRef")
    assert ref, f"{variable['name']} must come from a Secret (valueFrom.secretKeyRef), not a value"
    return ref["name"], ref["key"]


def example_secrets() -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d["stringData"] for d in load_documents(SECRET_EXAMPLE)}


def named_port(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {c['name']} has no port named {port}"
    return int(numbers[0])


# --- schemas ----------------------------------------------------------------------------------


def manifests_to_validate() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for entry in ENTRY_POINTS:
        found += [(f"apply -k {entry.relative_to(ROOT)}", obj) for obj in render(entry)]
    found += [(str(SECRET_EXAMPLE.relative_to(ROOT)), obj) for obj in load_documents(SECRET_EXAMPLE)]
    return found


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_against_the_kubernetes_schemas(version: str) -> None:
    checked = manifests_to_validate()
    assert {obj["kind"] for _, obj in checked} >= {"Deployment", "Service", "StatefulSet", "Secret"}
    for where, obj in checked:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{where}: {obj['kind']}/{obj['metadata']['name']} at {path}: {e.message}")


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={}),
        lambda d: d["spec"].update(replicas="two"),
        lambda d: d["spec"].pop("selector"),
    ],
    ids=["misspelt-field", "wrong-type", "missing-required"],
)
def test_the_validator_rejects_a_broken_deployment(break_it: Any) -> None:
    api = copy.deepcopy(find(everything(), "Deployment", "ranktune-api"))
    kubernetes_validate.validate(api, VERSIONS[-1], strict=True)
    break_it(api)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, VERSIONS[-1], strict=True)


# --- kustomize --------------------------------------------------------------------------------


def test_every_manifest_is_applied_by_kustomize_except_the_secret_example() -> None:
    applied = kustomization_files(KUBERNETES) | kustomization_files(OPTUNA)
    ignored = {(ROOT / line).resolve() for line in (ROOT / ".gitignore").read_text().split()}
    on_disk = {p.resolve() for p in KUBERNETES.rglob("*.yaml")} - ignored  # a filled-in secret.yaml
    assert on_disk - applied == {SECRET_EXAMPLE.resolve()}, "a manifest no kustomization.yaml lists"
    assert applied <= on_disk, f"kustomization.yaml lists missing files: {sorted(applied - on_disk)}"
    assert kustomization_files(APP) < applied, "deploy/kubernetes must include deploy/kubernetes/app"


def test_kustomize_never_applies_a_secret() -> None:
    """`kubectl apply -k` would put placeholders back over the real values."""
    for entry in ENTRY_POINTS:
        assert not [o for o in render(entry) if o["kind"] == "Secret"], entry


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_render_builds_what_kubectl_kustomize_builds(entry: Path) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(entry)], capture_output=True, text=True, timeout=120, check=True
    ).stdout

    def key(obj: dict[str, Any]) -> str:
        return json.dumps(obj, sort_keys=True)

    assert sorted(map(key, yaml.safe_load_all(built))) == sorted(map(key, render(entry)))


def test_everything_lives_in_one_namespace() -> None:
    namespaces = {o["metadata"]["name"] for o in everything() if o["kind"] == "Namespace"}
    assert namespaces == {kustomization(APP)["namespace"]}
    assert {kustomization(p.parent)["namespace"] for p in KUBERNETES.glob("*/kustomization.yaml")} == (
        namespaces
    )
    assert {d["metadata"]["namespace"] for d in load_documents(SECRET_EXAMPLE)} == namespaces


# --- the ranktune containers ------------------------------------------------------------------


def test_ranktune_containers_run_the_image_of_docker_compose() -> None:
    compose = load_compose()["services"]
    objects = everything()
    ranktune = ranktune_containers(objects)
    assert {name for name, _ in ranktune} == {"ranktune-api", "ranktune-worker", "ranktune-optuna-sync"}
    wanted = split_image(interpolate(compose["api"]["image"]))
    for name, c in ranktune:
        assert split_image(c["image"]) == wanted, f"{name}/{c['name']}: {c['image']}"
        assert c.get("imagePullPolicy") == "IfNotPresent", f"{name}/{c['name']}: pulls `latest` every start"
    postgres = container(objects, "StatefulSet", "ranktune-postgres", "postgres")
    assert postgres["image"] == compose["postgres"]["image"]


def test_every_ranktune_container_runs_a_real_ranktune_verb() -> None:
    for name, c in ranktune_containers(everything()):
        assert "command" not in c, f"{name}/{c['name']}: `command` replaces the image's ranktune entrypoint"
        try:
            parse_cli(c["args"])
        except Exception as e:
            pytest.fail(f"{name}/{c['name']}: ranktune {shlex.join(c['args'])}: {e}")


def test_ranktune_variables_given_to_containers_are_real() -> None:
    for name, c in ranktune_containers(everything()):
        _, _, command = parse_cli(c["args"])
        for variable in env_of(c):
            if variable.startswith("RANKTUNE_"):
                real = is_real_variable(variable, command)
                assert real, f"{name}/{c['name']}: {variable} is read by nothing"


def test_pods_run_as_the_images_unprivileged_user() -> None:
    for obj in everything():
        if not ranktune_containers([obj]):
            continue
        security = runs_pods(obj)["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == dockerfile_uid(), obj["metadata"]["name"]
        for c in containers(obj):
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]


def test_selectors_match_their_pod_templates() -> None:
    objects = everything()
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            wanted = obj["spec"]["selector"]["matchLabels"].items()
            assert wanted <= pod_labels(obj).items(), obj["metadata"]["name"]
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        pods = [o for o in objects if pod_spec(o) and selector <= pod_labels(o).items()]
        assert len(pods) == 1, f"Service {service['metadata']['name']} selects {len(pods)} workloads"


# --- API --------------------------------------------------------------------------------------


def test_the_api_migrates_in_an_init_container_before_it_serves() -> None:
    api = find(everything(), "Deployment", "ranktune-api")
    spec = runs_pods(api)
    migrations = [parse_cli(c["args"])[0] for c in spec.get("initContainers", [])]
    assert migrations == [("db", "upgrade")], "the API pod must run `ranktune db upgrade` first"
    (serve,) = spec["containers"]
    path, params, _ = parse_cli(serve["args"])
    assert path == ("serve",)
    assert params["host"] == "0.0.0.0", "inside a pod the API must listen beyond loopback"
    database = {secret_ref(env_of(c)["RANKTUNE_DATABASE_URL"]) for c in containers(api)}
    assert len(database) == 1, f"migration and API read different databases: {database}"
    rollout = api["spec"]["strategy"]["rollingUpdate"]
    assert rollout["maxSurge"] == 1, "more new pods at once run their migrations side by side"


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    database = tmp_path_factory.mktemp("probe") / "unmigrated.db"
    return TestClient(create_app(Settings(database_url=f"sqlite:///{database}")))


def test_api_probes_ask_a_real_route_on_the_serve_port_without_a_token(app_client: TestClient) -> None:
    api = container(everything(), "Deployment", "ranktune-api", "api")
    _, params, _ = parse_cli(api["args"])
    probes = {k: api[k] for k in ("startupProbe", "readinessProbe", "livenessProbe") if k in api}
    assert {"readinessProbe", "livenessProbe"} <= set(probes)
    for kind, probe in probes.items():
        get = probe["httpGet"]
        assert get["path"] == "/healthz", kind
        assert named_port(api, get["port"]) == params["port"], f"{kind}: not the port `serve` listens on"
        answer = app_client.get(get["path"])  # unmigrated: 503, but never 401 nor 404
        assert answer.status_code in (200, 503) and "status" in answer.json(), (kind, answer.text)


def test_the_api_service_exposes_the_serve_port() -> None:
    objects = everything()
    api = container(objects, "Deployment", "ranktune-api", "api")
    _, params, _ = parse_cli(api["args"])
    (port,) = find(objects, "Service", "ranktune-api")["spec"]["ports"]
    assert named_port(api, port["targetPort"]) == params["port"]


# --- workers ----------------------------------------------------------------------------------


def test_workers_pull_from_the_api_service_with_a_token_from_a_secret() -> None:
    objects = everything()
    worker = container(objects, "Deployment", "ranktune-worker", "worker")
    path, params, command = parse_cli(worker["args"])
    assert path == ("worker",)
    url = urlsplit(params["server"])
    (port,) = find(objects, "Service", "ranktune-api")["spec"]["ports"]
    assert url.hostname is not None and url.hostname.split(".")[0] == "ranktune-api", params["server"]
    assert url.port == port["port"], params["server"]
    assert "--token" not in worker["args"], "a token on the command line shows in `ps` and the API"
    token = next(p for p in command.params if p.name == "token")
    assert token.envvar in env_of(worker), f"worker: no {token.envvar}"
    secret_ref(env_of(worker)[token.envvar])
    assert "RANKTUNE_DATABASE_URL" not in env_of(worker), "workers talk HTTP only: no database access"


def test_the_optuna_mirror_runs_once_on_the_database_and_never_in_the_api() -> None:
    mirror = find(everything(), "Deployment", "ranktune-optuna-sync")
    assert mirror["spec"]["replicas"] == 1 and mirror["spec"]["strategy"]["type"] == "Recreate"
    (c,) = pod_spec(mirror)["containers"]
    assert c["args"][0] == "optuna-sync" and "RANKTUNE_DATABASE_URL" in env_of(c)
    api = container(everything(), "Deployment", "ranktune-api", "api")
    assert "optuna-sync" not in api["args"]


def test_workers_take_one_gpu_each_and_update_without_a_spare_one() -> None:
    deployment = find(everything(), "Deployment", "ranktune-worker")
    (worker,) = runs_pods(deployment)["containers"]
    assert str(worker["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    _, params, _ = parse_cli(worker["args"])
    assert params["device"] in ("cuda", "cuda:0"), "the pod sees its one GPU as cuda:0"
    tolerations = runs_pods(deployment)["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations), "GPU nodes are commonly tainted"
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert runs_pods(deployment)["terminationGracePeriodSeconds"] >= 30


# --- secrets and PostgreSQL -------------------------------------------------------------------


def secret_refs(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {
        secret_ref(variable)
        for obj in objects
        for c in containers(obj)
        for variable in c.get("env", [])
        if "valueFrom" in variable
    }


def test_the_secret_example_holds_every_secret_the_manifests_read_and_nothing_real() -> None:
    examples = example_secrets()
    shown = {(name, key) for name, data in examples.items() for key in data}
    assert secret_refs(everything()) == shown, "secret.example.yaml and the manifests disagree"
    for document in load_documents(SECRET_EXAMPLE):
        assert "data" not in document, "stringData only: base64 hides what the example holds"
        for key, value in document["stringData"].items():
            assert PLACEHOLDER in value, f"{document['metadata']['name']}.{key} is not a placeholder"
    assert "deploy/kubernetes/secret.yaml" in (ROOT / ".gitignore").read_text().split()


def test_the_example_database_url_is_the_in_cluster_postgres() -> None:
    objects = everything()
    postgres = find(objects, "StatefulSet", "ranktune-postgres")
    env = env_of(container(objects, "StatefulSet", "ranktune-postgres", "postgres"))
    service = find(objects, "Service", "ranktune-postgres")
    assert postgres["spec"]["serviceName"] == service["metadata"]["name"]
    url = make_url(example_secrets()["ranktune-database"]["RANKTUNE_DATABASE_URL"])
    assert url.drivername == "postgresql+psycopg", "the driver ranktune installs is psycopg 3"
    assert url.host == service["metadata"]["name"]
    assert url.port == service["spec"]["ports"][0]["port"]
    assert url.username == env["POSTGRES_USER"]["value"] and url.database == env["POSTGRES_DB"]["value"]
    name, key = secret_ref(env["POSTGRES_PASSWORD"])
    assert url.password == example_secrets()[name][key], "the URL's password must be POSTGRES_PASSWORD"


def test_postgres_keeps_its_data_on_a_claim_and_is_probed_with_pg_isready() -> None:
    objects = everything()
    postgres = find(objects, "StatefulSet", "ranktune-postgres")
    c = container(objects, "StatefulSet", "ranktune-postgres", "postgres")
    claims = {t["metadata"]["name"] for t in postgres["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    data = [m for name, m in mounts.items() if name in claims]
    assert data == ["/var/lib/postgresql/data"], mounts
    assert env_of(c)["PGDATA"]["value"].startswith(data[0] + "/"), "initdb refuses a lost+found"
    assert c["readinessProbe"]["exec"]["command"][0] == "pg_isready"


# --- the README -------------------------------------------------------------------------------


def deploy_commands() -> list[list[str]]:
    """The kubectl, sbatch and cp command lines of the README and of the manifests' comments."""
    text = README.read_text()
    assert README_SECTION in text, f"README.md has no section {README_SECTION!r}"
    lines = command_lines(README)
    for path in KUBERNETES.rglob("*.yaml"):
        lines += command_lines(path)
    return [shlex.split(line, comments=True) for line in lines if re.match(r"(kubectl|sbatch|cp) ", line)]


def run_args(words: list[str]) -> list[str] | None:
    """ranktune's arguments of ``kubectl … run … -- ARGS`` (the image's entrypoint is ranktune)."""
    if words[0] != "kubectl" or "run" not in words or "--" not in words:
        return None
    return words[words.index("--") + 1 :]


def test_readme_applies_the_kustomizations_and_files_that_exist() -> None:
    commands = deploy_commands()
    applied = [w[w.index("-k") + 1] for w in commands if w[0] == "kubectl" and "-k" in w]
    assert {str(p.relative_to(ROOT)) for p in ENTRY_POINTS} <= set(applied)
    for target in applied:
        assert (ROOT / target / "kustomization.yaml").is_file(), target
    # A file the commands make with `cp SOURCE TARGET` exists once its source does.
    copies = {w[2]: w[1] for w in commands if w[0] == "cp" and len(w) == 3}
    files = [w[w.index("-f") + 1] for w in commands if w[0] == "kubectl" and "-f" in w]
    assert files, "the README applies no file (`kubectl apply -f`)"
    for target in files:
        assert (ROOT / copies.get(target, target)).is_file(), f"kubectl apply -f {target}: no such file"
        if target in copies:
            assert target in (ROOT / ".gitignore").read_text().split(), f"{target} holds secrets: ignore it"


def test_kubectl_commands_use_the_namespace_and_labels_of_the_manifests() -> None:
    objects = everything()
    (namespace,) = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    all_labels = [pod_labels(o) for o in objects if pod_spec(o)]
    for words in (w for w in deploy_commands() if w[0] == "kubectl"):
        for flag in ("-n", "--namespace"):
            if flag in words:
                assert words[words.index(flag) + 1] == namespace, shlex.join(words)
        if "-l" in words:
            wanted = dict(pair.split("=", 1) for pair in words[words.index("-l") + 1].split(","))
            assert any(wanted.items() <= labels.items() for labels in all_labels), shlex.join(words)


def test_readme_runs_real_ranktune_commands_in_the_image_with_the_database_secret() -> None:
    runs = [(w, run_args(w)) for w in deploy_commands()]
    runs = [(w, args) for w, args in runs if args]
    assert any(args[:2] == ["token", "create"] for _, args in runs), "the README never creates a token"
    compose_image = interpolate(load_compose()["services"]["api"]["image"])
    secrets = set(example_secrets())
    for words, args in runs:
        try:
            parse_cli(args)
        except Exception as e:
            pytest.fail(f"{shlex.join(words)}: ranktune {shlex.join(args)}: {e}")
        images = [w.removeprefix("--image=") for w in words if w.startswith("--image=")]
        assert all(split_image(i) == split_image(compose_image) for i in images), images
        for override in (w.removeprefix("--overrides=") for w in words if w.startswith("--overrides=")):
            # Merged into the pod kubectl generates, whose one container is named after the pod: a
            # container of another name would be a second one, without the image's arguments.
            assert "--override-type=strategic" in words, "merge and json replace the container list"
            (pod_container,) = json.loads(override)["spec"]["containers"]
            assert pod_container["name"] == words[words.index("run") + 1], shlex.join(words)
            refs = {e["secretRef"]["name"] for e in pod_container["envFrom"]}
            assert refs and refs <= secrets, f"{override}: no Secret of secret.example.yaml"


def test_readme_names_workloads_and_secrets_that_exist() -> None:
    objects = everything()
    names = {f"{o['kind'].lower()}/{o['metadata']['name']}" for o in objects}
    for words in deploy_commands():
        for word in words:
            match = re.fullmatch(r"(deployment|statefulset|service|svc)/([\w-]+)", word)
            if match:
                kind = "service" if match.group(1) == "svc" else match.group(1)
                assert f"{kind}/{match.group(2)}" in names, f"{shlex.join(words)}: no {word}"
        if words[:1] == ["kubectl"] and "secret" in words and "generic" in words:
            name = words[words.index("generic") + 1]
            literals = [w.split("=", 2)[1] for w in words if w.startswith("--from-literal=")]
            assert name in example_secrets(), f"{shlex.join(words)}: the manifests read no Secret {name}"
            assert set(literals) <= set(example_secrets()[name]), literals

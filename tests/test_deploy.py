"""The deployment files, checked statically: no Docker engine runs here.

docker-compose.yml is read with PyYAML and every command it (or the docs) runs in the ranktune image
is parsed by the real ``ranktune`` CLI, the click command typer builds from ``ranktune.service.cli.app``:
a verb, option or choice that does not exist fails here, as it would in the container.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import typer

from ranktune.service.cli import app as ranktune_app
from ranktune.service.settings import Settings
from tests.deploy_cli import (
    option_envvars,
    parse_cli,
    ranktune_args,
    read_by_code,
    settings_env_names,
)
from tests.deploy_files import (
    COMPOSE,
    DOCKERFILE,
    ENV_EXAMPLE,
    RANKTUNE_SERVICES,
    README,
    ROOT,
    as_argv,
    command_lines,
    dockerfile_args,
    env_example,
    environment,
    interpolate,
    load_compose,
    service_argv,
    variables_in,
)

# --- services and their order -----------------------------------------------------------------


def test_the_services_exist() -> None:
    services = load_compose()["services"]
    assert {"postgres", *RANKTUNE_SERVICES} <= set(services)


def test_postgres_has_a_healthcheck_and_a_named_volume() -> None:
    compose = load_compose()
    postgres = compose["services"]["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(as_argv(postgres["healthcheck"]["test"]))
    data_mounts = [v for v in postgres["volumes"] if str(v).split(":")[1:2] == ["/var/lib/postgresql/data"]]
    assert data_mounts, "postgres: no volume on /var/lib/postgresql/data"
    volume = data_mounts[0].split(":")[0]
    assert not volume.startswith(("/", ".", "~")), f"postgres: {volume} is a bind mount, not a named volume"
    assert volume in (compose.get("volumes") or {}), f"volume {volume} is not declared at the top level"
    env = environment(postgres)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= set(env)
    assert "POSTGRES_PASSWORD" in variables_in(str(env["POSTGRES_PASSWORD"])), "password must come from .env"


@pytest.mark.parametrize("name", RANKTUNE_SERVICES)
def test_ranktune_services_run_the_image_of_the_dockerfile(name: str) -> None:
    service = load_compose()["services"][name]
    build = service["build"]
    context = build if isinstance(build, str) else build["context"]
    assert (ROOT / context / "Dockerfile").resolve() == DOCKERFILE
    assert service_argv(service)[0] == "ranktune"


def test_migrate_is_a_one_shot_db_upgrade_after_a_healthy_database() -> None:
    migrate = load_compose()["services"]["migrate"]
    path, _, _ = parse_cli(ranktune_args(service_argv(migrate)))
    assert path == ("db", "upgrade")
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert str(migrate.get("restart", "no")) == "no", "a one-shot service must not restart"


def test_api_starts_after_a_healthy_database_and_a_finished_migration() -> None:
    api = load_compose()["services"]["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_api_serves_on_all_interfaces_and_its_healthcheck_asks_healthz_on_that_port() -> None:
    compose = load_compose()
    api = compose["services"]["api"]
    path, params, _ = parse_cli(ranktune_args(service_argv(api)))
    assert path == ("serve",)
    assert params["host"] == "0.0.0.0", "inside a container the API must listen beyond loopback"
    port = params["port"]
    probe = " ".join(as_argv(api["healthcheck"]["test"]))
    assert "curl" not in probe and "wget" not in probe, "python:3.11-slim has neither curl nor wget"
    assert re.search(rf"https?://(127\.0\.0\.1|localhost):{port}/healthz\b", probe), probe
    published = [str(interpolate(p) if isinstance(p, str) else p.get("target")) for p in api["ports"]]
    assert any(p.split(":")[-1].split("/")[0] == str(port) for p in published), published


def test_worker_pulls_from_the_api_by_service_name_once_it_is_healthy() -> None:
    services = load_compose()["services"]
    worker = services["worker"]
    path, params, command = parse_cli(ranktune_args(service_argv(worker)))
    assert path == ("worker",)
    _, api_params, _ = parse_cli(ranktune_args(service_argv(services["api"])))
    assert params["server"] == f"http://api:{api_params['port']}"
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    token = next(p for p in command.params if p.name == "token")
    given = params["token"] is not None or token.envvar in environment(worker)
    assert given, f"worker: no token (neither --token nor {token.envvar} in its environment)"


def test_worker_reserves_a_gpu_and_can_be_scaled() -> None:
    worker = load_compose()["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and d.get("count") == 1 and "gpu" in d.get("capabilities", [])
        for d in devices
    ), devices
    assert "container_name" not in worker, "a fixed container name breaks --scale worker=N"
    assert not worker.get("ports"), "a published host port breaks --scale worker=N"


def test_optuna_sync_is_optional_and_runs_beside_the_api_after_the_migration() -> None:
    services = load_compose()["services"]
    sync = services["optuna-sync"]
    path, params, _ = parse_cli(ranktune_args(service_argv(sync)))
    assert path == ("optuna-sync",) and not params["once"], "optuna-sync must loop, not run one pass"
    assert sync.get("profiles"), "the mirror is optional: `docker compose up` must not start it"
    assert sync["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert environment(sync)["RANKTUNE_DATABASE_URL"] == environment(services["api"])["RANKTUNE_DATABASE_URL"]
    assert "RANKTUNE_OPTUNA_MIRROR" not in environment(services["api"]), "the API never mirrors"


@pytest.mark.parametrize("name", RANKTUNE_SERVICES)
def test_every_command_is_a_real_ranktune_verb(name: str) -> None:
    parse_cli(ranktune_args(service_argv(load_compose()["services"][name])))


COMPOSE_RUN_VALUED = {"-e", "--env", "--name", "-u", "--user", "-w", "--workdir", "-v", "--volume", "-p"}
SHELL_BREAKS = {"&&", "||", "|", ";", "&", ">", ">>", "2>"}


def ranktune_words(words: list[str]) -> list[str] | None:
    """The arguments one shell command line gives ranktune, or None when it runs no ranktune.

    The command is the first word after any ``VAR=value`` assignments (``VAR=$(command …)`` too):
    ``ranktune``, ``…/ranktune``, or ``docker compose run [options] SERVICE`` for a ranktune service.
    """
    words = list(words)
    while words and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
        value = words[0].partition("=")[2]
        if value.startswith("$("):
            words[0] = value[2:]
            break
        words.pop(0)
    if words and (words[0] == "ranktune" or words[0].endswith("/ranktune")):
        rest = words[1:]
    elif words[:3] == ["docker", "compose", "run"]:
        rest = words[3:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in COMPOSE_RUN_VALUED else rest[1:]
        if not rest or rest[0] not in RANKTUNE_SERVICES:
            return None
        rest = rest[1:]
    else:
        return None
    args = []
    for word in rest:
        if word in SHELL_BREAKS:
            break
        # A shell variable stands for a value the reader fills in; "1" fits both str and int options.
        args.append("1" if re.fullmatch(r"\$\{?\w+\}?", word) else word.removesuffix(")"))
    return args


def documented_commands() -> list[tuple[str, list[str]]]:
    """Every ranktune command line of the README and of the deployment files' comments."""
    found = []
    for path in (README, COMPOSE, ENV_EXAMPLE):
        for line in command_lines(path):
            if "ranktune" not in line and "docker compose run" not in line:
                continue
            try:
                words = shlex.split(line, comments=True)
            except ValueError:
                continue  # an unbalanced quote: prose, not a command
            args = ranktune_words(words)
            if args:  # a bare `ranktune` names the program, it is no command
                found.append((f"{path.name}: {line}", args))
    return found


def verb_path(args: list[str]) -> list[str]:
    """The leading words of ``args`` that name verbs (``token create``); raises on an unknown one."""
    command, path = typer.main.get_command(ranktune_app), []
    for word in args:
        verbs = getattr(command, "commands", None)
        if verbs is None or word.startswith("-"):
            break
        if word not in verbs:
            raise ValueError(f"ranktune {' '.join(path)}: no verb {word!r}; there are {sorted(verbs)}")
        command = verbs[word]
        path.append(word)
    return path


def test_documented_commands_are_real_ranktune_commands() -> None:
    commands = documented_commands()
    assert any(args[:2] == ["token", "create"] for _, args in commands), "the docs never create a token"
    assert any(args[:1] == ["worker"] for _, args in commands), "the docs never start a worker"
    for where, args in commands:
        try:
            if verb_path(args) == args:
                continue  # a mention in prose (`ranktune plan`): the verbs exist, options are elsewhere
            parse_cli(args)
        except Exception as e:
            pytest.fail(f"{where}: {e}")


# --- variables --------------------------------------------------------------------------------


def passed_through(compose: dict[str, Any]) -> set[str]:
    """Names handed over from .env without a value: environment entries and build args."""
    names = set()
    for service in compose["services"].values():
        names |= {k for k, v in environment(service).items() if v is None}
        build = service.get("build")
        args = build.get("args", []) if isinstance(build, dict) else []
        names |= {a for a in args if "=" not in a} if isinstance(args, list) else set()
    return names


def test_compose_uses_braced_variables_only() -> None:
    text = re.sub(r"\$\$", "", COMPOSE.read_text())
    assert not re.search(r"\$[A-Za-z_]", text), "write ${VAR}: tests and readers look for the braces"


def test_every_variable_the_compose_file_reads_is_in_env_example() -> None:
    compose = load_compose()
    wanted = variables_in(COMPOSE.read_text()) | passed_through(compose)
    missing = wanted - set(env_example())
    assert not missing, f".env.example does not describe {sorted(missing)}"


def test_every_env_example_variable_is_used_by_the_compose_file() -> None:
    used = variables_in(COMPOSE.read_text()) | passed_through(load_compose())
    unused = set(env_example()) - used
    assert not unused, f".env.example lists {sorted(unused)}, which docker-compose.yml never reads"


def test_variables_given_to_ranktune_containers_are_real() -> None:
    """Each is a Settings field, an option's environment variable, or read by the code itself."""
    services = load_compose()["services"]
    for name in RANKTUNE_SERVICES:
        _, _, command = parse_cli(ranktune_args(service_argv(services[name])))
        for variable in environment(services[name]):
            if not variable.startswith("RANKTUNE_"):
                continue
            real = variable in settings_env_names() | option_envvars(command) or read_by_code(variable)
            assert real, f"{name}: {variable} is read by nothing in ranktune"


def test_ranktune_variables_of_env_example_are_settings_or_compose_variables() -> None:
    compose_text = COMPOSE.read_text()
    container_names = {v for s in load_compose()["services"].values() for v in environment(s)}
    for variable in env_example():
        if not variable.startswith("RANKTUNE_"):
            continue
        if variable in container_names:
            continue  # checked against the code above
        assert variable in variables_in(compose_text), (
            f"{variable}: no container gets it, compose never reads it"
        )
        assert variable not in settings_env_names()


def test_env_example_shows_the_real_defaults_of_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    shown = {k: v for k, v in env_example().items() if k in settings_env_names()}
    assert shown, ".env.example shows no server setting"
    for variable, value in shown.items():
        field = variable.removeprefix("RANKTUNE_").lower()
        with monkeypatch.context() as patch:
            patch.setenv(variable, value)
            assert getattr(Settings(), field) == Settings.model_fields[field].default, variable


def test_build_args_exist_in_the_dockerfile() -> None:
    build = load_compose()["services"]["api"]["build"]
    args = build.get("args", []) if isinstance(build, dict) else []
    names = {a.partition("=")[0] for a in args} if isinstance(args, list) else set(args)
    assert names <= set(dockerfile_args()), f"unknown build args {sorted(names - set(dockerfile_args()))}"


# --- the README -------------------------------------------------------------------------------


def test_readme_settings_table_has_every_setting_with_its_default() -> None:
    rows = {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\| `(RANKTUNE_[A-Z0-9_]+)` \| ([^|]*) \|", README.read_text(), re.MULTILINE)
    }
    for name, field in Settings.model_fields.items():
        variable = f"RANKTUNE_{name.upper()}"
        assert variable in rows, f"README.md: the settings table has no row for {variable}"
        if field.default_factory is None:
            default = field.default
            expected = str(default).lower() if isinstance(default, bool) else str(default)
            assert rows[variable] == f"`{expected}`", f"README.md: {variable} default {rows[variable]}"


# Settings the compose file sets itself, so .env does not pass them on.
SET_BY_COMPOSE = {
    "database_url": "built from the POSTGRES_* variables",
    "host": "`serve --host`",
    "port": "`serve --port`; the healthcheck and the workers' URL depend on it",
    "sqlite_busy_timeout_ms": "the deployment runs on PostgreSQL",
}


def test_every_server_setting_can_be_set_from_env() -> None:
    api = environment(load_compose()["services"]["api"])
    for name in Settings.model_fields:
        variable = f"RANKTUNE_{name.upper()}"
        if name in SET_BY_COMPOSE:
            continue
        assert variable in api, f"api: {variable} is not passed on from .env (add `{variable}:`)"

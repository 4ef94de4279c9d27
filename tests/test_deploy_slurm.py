"""The Slurm script deploy/slurm/ranktune-worker.sbatch: no Slurm runs here.

bash checks its syntax, the real CLI parses the ``ranktune`` command it runs, and the script itself
runs under bash with the variables Slurm sets, against a stand-in ``ranktune`` that records its
arguments, environment and process id.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.deploy_cli import is_real_variable, parse_cli
from tests.deploy_files import README, ROOT, SLURM_SCRIPT, command_lines

# The sbatch options the script may set (sbatch(1)); a misspelt one would be rejected at submission.
SBATCH_OPTIONS = {
    "account", "array", "constraint", "cpus-per-gpu", "cpus-per-task", "error", "exclusive", "gpus",
    "gpus-per-task", "gres", "job-name", "mem", "mem-per-cpu", "mem-per-gpu", "nodes", "ntasks",
    "output", "partition", "qos", "requeue", "signal", "time",
}  # fmt: skip
STUB = """#!/bin/bash
{ printf '%s\\n' "$$" "$@"; } > "$RECORD.args"
env > "$RECORD.env"
"""


def script_lines() -> list[str]:
    return SLURM_SCRIPT.read_text().splitlines()


def directives() -> dict[str, str]:
    found = {}
    for line in script_lines():
        if line.startswith("#SBATCH"):
            match = re.fullmatch(r"#SBATCH --([a-z-]+)(?:=(\S+))?", line.strip())
            assert match, f"not one long option per #SBATCH line: {line!r}"
            found[match.group(1)] = match.group(2) or ""
    return found


def launch_line() -> str:
    lines = [line for line in script_lines() if re.search(r"\branktune worker\b", line)]
    lines = [line for line in lines if not line.lstrip().startswith("#")]
    assert len(lines) == 1, f"the script must run `ranktune worker` once, found {lines}"
    return lines[0].strip()


def test_the_script_is_valid_bash() -> None:
    assert script_lines()[0] == "#!/bin/bash"
    result = subprocess.run(["bash", "-n", str(SLURM_SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_directives_are_read_and_ask_for_one_gpu_per_array_task() -> None:
    lines = script_lines()
    first_command = next(
        i for i, line in enumerate(lines[1:], 1) if line.strip() and not line.lstrip().startswith("#")
    )
    late = [line for line in lines[first_command:] if line.startswith("#SBATCH")]
    assert not late, f"sbatch ignores directives after the first command: {late}"
    found = directives()
    assert set(found) <= SBATCH_OPTIONS, f"unknown sbatch options {sorted(set(found) - SBATCH_OPTIONS)}"
    assert found["gres"] == "gpu:1", "one GPU per array task"
    assert re.fullmatch(r"\d+-\d+(%\d+)?", found["array"]), found["array"]
    signal = re.fullmatch(r"B:TERM@(\d+)", found["signal"])
    assert signal and int(signal.group(1)) >= 60, "SIGTERM to the batch shell ahead of the time limit"
    assert launch_line().startswith("exec "), "--signal=B: reaches the worker only if it is the shell"


def test_the_worker_command_is_a_real_ranktune_command_with_max_trials() -> None:
    words = shlex.split(launch_line())
    args = words[words.index("ranktune") + 1 :]
    # A shell variable stands for a value the caller sets; "1" fits both str and int options.
    path, params, _ = parse_cli([re.sub(r"\$\{\w+(:-[^}]*)?\}", "1", word) for word in args])
    assert path == ("worker",)
    assert params["max_trials"] is not None, "each array task stops after --max-trials"
    assert params["device"] in ("cuda", "cuda:0"), "the one GPU Slurm gives a task is cuda:0"
    assert "--token" not in args and "--server" not in args, "both come from the environment"


def test_ranktune_variables_of_the_script_are_real() -> None:
    _, _, worker = parse_cli(["worker"])
    names = set(re.findall(r"\bRANKTUNE_[A-Z0-9_]+", SLURM_SCRIPT.read_text()))
    assert {"RANKTUNE_SERVER", "RANKTUNE_TOKEN"} <= names
    for name in names:
        assert is_real_variable(name, worker), f"{name} is read by nothing in ranktune"


@pytest.fixture
def slurm_env(tmp_path: Path) -> dict[str, str]:
    """A virtual environment whose bin/ holds the stand-in ranktune, and the variables Slurm sets."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "activate").write_text(f'PATH="{bin_dir}:$PATH"\n')
    stub = bin_dir / "ranktune"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RECORD": str(tmp_path / "ranktune"),
        "VENV": str(tmp_path / "venv"),
        "RANKTUNE_SERVER": "https://ranktune.example.org",
        "RANKTUNE_TOKEN": "worker-token",
        "SLURM_JOB_ID": "1001",
        "SLURM_ARRAY_JOB_ID": "1000",
        "SLURM_ARRAY_TASK_ID": "3",
        "SLURM_CPUS_PER_TASK": "4",
        "CUDA_VISIBLE_DEVICES": "2",
    }


def run_script(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], int]:
    process = subprocess.Popen(
        ["bash", str(SLURM_SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), process.pid


def recorded(env: dict[str, str]) -> tuple[int, list[str], dict[str, str]]:
    pid, *args = Path(env["RECORD"] + ".args").read_text().splitlines()
    lines = Path(env["RECORD"] + ".env").read_text().splitlines()
    return int(pid), args, dict(line.split("=", 1) for line in lines if "=" in line)


def test_the_script_execs_one_worker_per_task_with_server_and_token_from_the_environment(
    slurm_env: dict[str, str],
) -> None:
    result, pid = run_script({**slurm_env, "MAX_TRIALS": "7"})
    assert result.returncode == 0, result.stderr
    ranktune_pid, args, env = recorded(slurm_env)
    assert args == ["worker", "--max-trials", "7", "--device", "cuda", "--name", "slurm-1000-3"]
    path, params, _ = parse_cli(args)
    assert path == ("worker",) and params["max_trials"] == 7
    assert ranktune_pid == pid, "the worker must replace the batch shell (exec) to get its SIGTERM"
    assert env["RANKTUNE_SERVER"] == slurm_env["RANKTUNE_SERVER"]
    assert env["RANKTUNE_TOKEN"] == slurm_env["RANKTUNE_TOKEN"]
    assert env["CUDA_VISIBLE_DEVICES"] == "2" and env["OMP_NUM_THREADS"] == "4"


def test_the_script_runs_the_worker_inside_a_launcher(slurm_env: dict[str, str], tmp_path: Path) -> None:
    launcher = tmp_path / "apptainer"
    launcher.write_text(STUB)
    launcher.chmod(0o755)
    env = {**slurm_env, "LAUNCHER": f"{launcher} exec --nv ranktune.sif"}
    del env["VENV"]  # ranktune is inside the container, not on the host
    result, _ = run_script(env)
    assert result.returncode == 0, result.stderr
    _, args, _ = recorded(env)
    assert args[:4] == ["exec", "--nv", "ranktune.sif", "ranktune"]
    parse_cli(args[4:])
    assert "--max-trials" in args


@pytest.mark.parametrize("missing", ["RANKTUNE_SERVER", "RANKTUNE_TOKEN"])
def test_the_script_refuses_to_start_without_server_or_token(slurm_env: dict[str, str], missing: str) -> None:
    env = {k: v for k, v in slurm_env.items() if k != missing}
    result, _ = run_script(env)
    assert result.returncode != 0
    assert missing in result.stderr
    assert not Path(env["RECORD"] + ".args").exists(), "the worker started anyway"


def test_documented_sbatch_commands_submit_the_script() -> None:
    lines = command_lines(README) + command_lines(SLURM_SCRIPT)
    submissions = [shlex.split(line, comments=True) for line in lines if line.startswith("sbatch ")]
    assert any(line.startswith("sbatch ") for line in command_lines(README)), "README: no sbatch"
    for words in submissions:
        assert words[-1] == str(SLURM_SCRIPT.relative_to(ROOT)), shlex.join(words)
        arrays = [w.removeprefix("--array=") for w in words if w.startswith("--array=")]
        assert all(re.fullmatch(r"\d+-\d+(%\d+)?", a) for a in arrays), arrays
        exports = [w.removeprefix("--export=") for w in words if w.startswith("--export=")]
        for export in exports:
            assert export.split(",")[0] == "ALL", "without ALL the job loses RANKTUNE_SERVER and _TOKEN"
            assert "RANKTUNE_TOKEN" not in export, "a token on the command line shows in `ps`"

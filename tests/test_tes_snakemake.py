"""Snakemake (>= 8, the executor plugin interface) with snakemake-executor-plugin-tes — both from PyPI, nobody
here wrote either — runs a two-rule workflow through gpstage's TES server (docs/tes.md): local launcher,
docker runner, the workflow's files on S3 (moto).

How the plugin uses TES (snakemake_executor_plugin_tes 0.1.3): with a remote default storage provider every
input and output is a storage file, so a task has no TES inputs or outputs of its own: only the job script
(``content``, at ``/tmp/run_snakemake.sh``) and one executor, ``/bin/bash /tmp/run_snakemake.sh`` in the
``--container-image``, workdir ``/tmp``. That script runs Snakemake itself in the image: it installs the
storage plugin (``pip install --target .snakemake/pip-deployments snakemake-storage-plugin-s3``), fetches the
workflow's sources from the storage prefix (``--deploy-sources``), then runs the one job, reading and writing
S3 directly. So the image needs python, Snakemake and the S3 storage plugin, a pip that can install that
plugin offline, and the network of the host (moto listens on 127.0.0.1).

Two things are built once and kept under images/.cache (both keyed by the pins below):

* a venv for the Snakemake client (it pins py-tes < 0.5, gpstage's tests use py-tes >= 1.1: not one venv);
* ``gpstage/snakemake-module:<key>``: the python-module image (Debian, python3) + a venv ``/opt/snakemake``
  (first on PATH: the job script calls ``python`` and ``pip``) with Snakemake and the S3 storage plugin,
  wheels downloaded by the HOST's pip (as images/build.py does), installed with no network; its pip is set
  to install from a wheel directory in the image, without dependencies (the venv has them), so the
  plugin's auto-deploy step works offline.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.test_tes import settings_for, tes_server

SNAKEMAKE = "snakemake==9.27.1"
S3_PLUGIN = "snakemake-storage-plugin-s3==0.3.6"
TES_PLUGIN = "snakemake-executor-plugin-tes==0.1.3"
CLIENT_PINS = (SNAKEMAKE, TES_PLUGIN, S3_PLUGIN)  # the client's venv on this machine
IMAGE_PINS = (SNAKEMAKE, S3_PLUGIN)  # what runs the jobs, in the image
IMAGE_REPO = "gpstage/snakemake-module"

SNAKEFILE = """\
rule all:
    input: "results/shout.txt"

rule a:
    output: "results/hello.txt"
    shell: "echo 'hello from rule a' > {output}"

rule b:
    input: "results/hello.txt"
    output: "results/shout.txt"
    shell: "tr a-z A-Z < {input} > {output}; echo 'and rule b' >> {output}"
"""

# Runs in a container of the python-module image (no network), the wheels as a tar on stdin.
IMAGE_SCRIPT = f"""set -eu
mkdir /tmp/in
tar -x -C /tmp/in
python3 -m venv /opt/snakemake
/opt/snakemake/bin/pip install -q --no-index --no-cache-dir --disable-pip-version-check \\
    --find-links /tmp/in/wheels {' '.join(f"'{p}'" for p in IMAGE_PINS)}
/opt/snakemake/bin/pip check -q > /dev/null
mkdir -p /opt/wheels
cp /tmp/in/wheels/snakemake_storage_plugin_s3-*.whl /opt/wheels/
cat > /opt/snakemake/pip.conf <<'EOF'
[global]
no-index = true
find-links = /opt/wheels
disable-pip-version-check = true
[install]
no-deps = true
EOF
rm -rf /tmp/in /root/.cache
/opt/snakemake/bin/python -m snakemake --version > /dev/null
"""


def _builder() -> Any:
    from tests.fixtures_docker import load_image_builder

    return load_image_builder()


@contextmanager
def _locked(name: str) -> Iterator[Path]:
    """One builder at a time (two test sessions); yields the cache dir."""
    cache = Path(_builder().CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield cache


def _run(argv: list[str], what: str, timeout: float = 600, **kw: Any) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if done.returncode:
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")


@pytest.fixture(scope="session")
def images(docker_host: str) -> dict[str, str]:
    """The images this module needs, and no more: bash-module (the local_docker pair's) and python-module
    (the snakemake image's base). Not the runtime image nor the entry bundle: the local launcher runs the
    entry on this machine, the docker runner starts the executors' images."""
    return _builder().ensure_images(docker_host, which=("bash-module", "python-module"),
                                    log=lambda msg: print(f"[images] {msg}", file=sys.stderr))


@pytest.fixture
def local_docker(pair_for: Any) -> Any:
    """The local launcher with the docker runner (tests/fixtures_pairs.py)."""
    return pair_for("local+docker")


@pytest.fixture(scope="session")
def snakemake_exe() -> str:
    """The ``snakemake`` of a venv of its own (images/.cache/snakemake-venv), made once for these pins."""
    with _locked("snakemake-venv") as cache:
        venv = cache / "snakemake-venv"
        stamp = venv / ".pins"
        if not (stamp.is_file() and stamp.read_text() == json.dumps(CLIENT_PINS)):
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)], "creating the Snakemake venv")
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", *CLIENT_PINS],
                 "pip install (the Snakemake client)")
            stamp.write_text(json.dumps(CLIENT_PINS))
        return str(venv / "bin" / "snakemake")


def _download_wheels(build: Any, labels: dict[str, str], dest: Path, work: Path) -> None:
    """Wheels of IMAGE_PINS and all they need for the base's python/glibc/machine (host pip). The few
    dependencies published as source only (connection_pool) are built into wheels here first."""
    report = work / "report.json"
    _run([sys.executable, "-m", "pip", "install", "-q", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
          "--report", str(report), *IMAGE_PINS], "pip install --dry-run (the image's packages)")
    built = work / "built"
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        if not url.endswith(".whl"):
            meta = item["metadata"]
            _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w", str(built),
                  f"{meta['name']}=={meta['version']}"], f"pip wheel {meta['name']}")
    _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", str(dest),
          *build.wheels.platform_args(labels), "--find-links", str(built), *IMAGE_PINS],
         "pip download (the image's wheels)")


@pytest.fixture(scope="session")
def snakemake_image(images: dict[str, str], docker_host: str) -> str:
    """``gpstage/snakemake-module:<key>``: built once (about a minute), then found by its label."""
    build = _builder()
    docker = build.Docker(docker_host)
    base = images["python-module"]
    labels = docker.labels(base)
    key = build.sha256(json.dumps({"recipe": 1, "base": labels[build.LABEL], "pins": IMAGE_PINS, "script": IMAGE_SCRIPT}))
    ref = f"{IMAGE_REPO}:{key[:16]}"
    with _locked("snakemake-image") as cache:
        if docker.labels(ref).get(build.LABEL) == key:
            return ref
        t0 = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="snakemake-", dir=cache))
        try:
            _download_wheels(build, labels, work / "wheels", work)
            path = build.PATH_ENV.replace("PATH=", "PATH=/opt/snakemake/bin:", 1)
            build.install_and_commit(docker, base, IMAGE_SCRIPT, {"wheels": work / "wheels"}, ref,
                                     [f"ENV {path}", 'CMD ["/bin/bash"]', f"LABEL {build.LABEL}={key}"], work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        build.prune(docker, IMAGE_REPO, ref)
        print(f"[images] {ref}: built in {time.monotonic() - t0:.1f}s", file=sys.stderr)
        return ref


def _task_logs(url: str) -> str:
    """Every task's state and executor logs, for a failure's message."""
    try:
        tasks = requests.get(f"{url}/ga4gh/tes/v1/tasks", params={"view": "FULL"}, timeout=10).json()["tasks"]
    except (requests.RequestException, ValueError, KeyError) as e:
        return f"(no task list: {e})"
    lines = []
    for t in tasks:
        lines.append(f"task {t['id']} {t.get('name')}: {t['state']}")
        for log in t.get("logs") or ():
            lines += [f"  system: {m}" for m in log.get("system_logs") or ()]
            for e in log.get("logs") or ():
                lines.append(f"  exit {e.get('exit_code')}\n  stdout: {(e.get('stdout') or '')[-2000:]}\n"
                             f"  stderr: {(e.get('stderr') or '')[-4000:]}")
    return "\n".join(lines)


def test_a_two_rule_snakemake_workflow_runs_through_the_tes_executor_plugin(
        local_docker: Any, snakemake_exe: str, snakemake_image: str, tmp_path: Path, bucket: str, s3_client: Any,
        s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The jobs' containers reach S3 (moto on 127.0.0.1): host networking (the entry inherits this environment).
    monkeypatch.setenv("GPSTAGE_DOCKER_NETWORK", "host")
    workflow = tmp_path / "workflow"
    workflow.mkdir()
    (workflow / "Snakefile").write_text(SNAKEFILE)
    # The plugin prints $GITHUB_WORKSPACE/funnel.log when a task fails (its CI's debugging, left in 0.1.3):
    # without it a failed task ends Snakemake with a KeyError instead of the job's error.
    (tmp_path / "funnel.log").write_text("(see the task logs in the test's failure message)\n")
    prefix = f"s3://{bucket}/workflow"
    env = {**os.environ, "GITHUB_WORKSPACE": str(tmp_path),
           # the S3 storage plugin's settings, passed on to every job (as `export ...` in its script)
           "SNAKEMAKE_STORAGE_S3_ENDPOINT_URL": s3_endpoint, "SNAKEMAKE_STORAGE_S3_REGION": os.environ["AWS_DEFAULT_REGION"],
           "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": os.environ["AWS_ACCESS_KEY_ID"],
           "SNAKEMAKE_STORAGE_S3_SECRET_KEY": os.environ["AWS_SECRET_ACCESS_KEY"]}
    with tes_server(settings_for(local_docker, f"s3://{bucket}/tes", tmp_path, allow=[f"s3://{bucket}/"])) as url:
        argv = [snakemake_exe, "--executor", "tes", "--tes-url", f"{url}/ga4gh/tes",  # py-tes 0.4 adds /v1/tasks
                "--container-image", snakemake_image, "--jobs", "1", "--seconds-between-status-checks", "1",
                "--default-storage-provider", "s3", "--default-storage-prefix", prefix, "--printshellcmds"]
        try:
            ran = subprocess.run(argv, cwd=workflow, env=env, capture_output=True, text=True, timeout=170, check=False)
        except subprocess.TimeoutExpired as e:
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or ""
            pytest.fail(f"snakemake still running after 170 s\n{err[-6000:]}\n{_task_logs(url)}")
        logs = _task_logs(url)
    assert ran.returncode == 0, f"{ran.stdout[-3000:]}\n{ran.stderr[-6000:]}\n{logs}"
    body = s3_client.get_object(Bucket=bucket, Key="workflow/results/shout.txt")["Body"].read()
    assert body == b"HELLO FROM RULE A\nand rule b\n"
    assert s3_client.get_object(Bucket=bucket, Key="workflow/results/hello.txt")["Body"].read() == b"hello from rule a\n"
    assert logs.count(": COMPLETE") == 2, logs  # one task per rule (not `all`, a local rule), both complete

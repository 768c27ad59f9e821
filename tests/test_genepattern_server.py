"""GenePattern's server on gpstage (docs/genepattern-server.md): a Java harness (tests/genepattern/
GpServerHarness.java, compiled here with Debian's JDK) calls the installed drop-in scripts exactly as the
server's AWS Batch job runner does — cleared environment plus the server's variables, literal quotes
around arguments with a space, stdout and stderr in one buffer, the 60 s status budget, the metadata
then the working dir synced, exit_code.txt read — on five deployments at once; run-with-docker.sh as
the local docker executor runs it; bad calls.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from examples.sample_job import MODULE, expected_counts

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "genepattern" / "GpServerHarness.java"
CLI = [sys.executable, "-m", "frontends.genepattern"]
# case → (module exit code, seconds it sleeps, walltime given, cancelled by the server)
CASES = {"ok": (0, 0, None, False), "fails": (3, 0, None, False), "time-limit": (0, 120, 60, False),
         "cancel": (0, 120, None, True)}
EXPECTED = {"ok": ("done", 0), "fails": ("failed", 3), "time-limit": ("failed", 142), "cancel": ("failed", 143)}

pytestmark = [pytest.mark.timeout(600), pytest.mark.usefixtures("isolated_state")]


# ---- the server's side ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """``java … GpServerHarness``, compiled from source with the JDK (apt-installed when missing)."""
    if not shutil.which("javac"):
        sys.path.insert(0, str(ROOT / "scripts"))
        from hostutil import apt_install

        apt_install(["openjdk-17-jdk-headless"])
    out = tmp_path_factory.mktemp("harness")
    subprocess.run(["javac", "-d", str(out), str(HARNESS)], check=True, timeout=300)
    return ["java", "-Xmx64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", str(out), "GpServerHarness"]


@pytest.fixture(scope="session")
def aws_cli(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The aws CLI the server's uploads use: on PATH, else pip-installed into its own venv (it pins botocore)."""
    found = shutil.which("aws")
    if found:
        return found
    venv = ROOT / "images" / ".cache" / "awscli-venv"
    if not (venv / "bin" / "aws").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "awscli"],
                       check=True, timeout=600)
    return str(venv / "bin" / "aws")


@dataclass
class Deployment:
    name: str
    launcher: str
    settings: dict[str, Any]
    image: str | None
    storage_root: str | None = None  # None: S3 mode, the server's aws-s3-root
    install_env: dict[str, str] = field(default_factory=dict)
    server_env: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    uploads: str | None = None  # S3 mode: the server's `aws s3 sync` target root


def toml(doc: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        return json.dumps(v)

    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items()) + "\n"
                   for name, table in doc.items())


def install(tmp: Path, dep: Deployment) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.toml"
    tables = {f"launchers.{dep.launcher}": dep.settings, **{f'storage."{k}"': v for k, v in dep.profiles.items()}}
    config.write_text(toml(tables))
    scripts = tmp / "gp-scripts"
    argv = [*CLI, "install-scripts", str(scripts), "--config", str(config), "--state-dir", str(tmp / "state"),
            "--launcher", dep.launcher, *(["--storage-root", dep.storage_root] if dep.storage_root else []),
            *[a for k, v in dep.install_env.items() for a in ("--env", f"{k}={v}")]]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return scripts


def lay_out(base: Path, n: int, case: str) -> tuple[list[str], dict[str, str]]:
    """A GenePattern job dir: tasklib (libraries inside), a user's upload, ``<jobs>/<n>`` and its sibling
    ``<n>.meta``; the jobs dir has a space. Returns the submit arguments and the server's variables."""
    tasklib = base / "taskLib" / "wordcount.1.0"
    if not tasklib.exists():
        shutil.copytree(MODULE / "tasklib", tasklib)
        shutil.copytree(MODULE / "libraries", tasklib / "lib")
    upload = base / "users" / "test user" / "uploads" / f"words-{n}.txt"
    upload.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(MODULE / "inputs" / "words.txt", upload)
    (upload.parent / "someone-elses.txt").write_text("never staged\n")
    workdir, meta = base / "jobs dir" / str(n), base / "jobs dir" / f"{n}.meta"
    (workdir / f".inputs_for_{n}").mkdir(parents=True)
    code, sleep, walltime, _ = CASES[case]
    argv = [str(tasklib), str(workdir), "jobdef", f"GP_Job_{n}", str(workdir / f".inputs_for_{n}"),
            "bash", str(tasklib / "wordcount.sh"), str(upload), str(tasklib / "lib"), str(code), str(sleep)]
    env = {"GP_JOB_ID": str(n), "GP_USER_ID": "test user", "GP_JOB_WORKING_DIR": str(workdir),
           "GP_JOB_METADATA_DIR": str(meta), "GP_MODULE_NAME": "wordcount", "GP_MODULE_LSID": "urn:lsid:test:wordcount:1",
           "GP_JOB_DOCKER_BIND_MOUNTS": f"{upload.parent}:{workdir}", "GP_JOB_CPU_COUNT": "1", "GP_JOB_MEMORY_MB": "512",
           **({"GP_JOB_WALLTIME_SEC": str(walltime)} if walltime else {})}
    return argv, env


def server_uploads(aws: str, env: dict[str, str], root: str, files: list[Path], dirs: list[Path]) -> None:
    """What the server does before submit in S3 mode: one `aws s3 sync` per input file and per dir."""
    for f in files:
        subprocess.run([aws, "s3", "sync", str(f.parent), f"{root}{f.parent}", "--exclude", "*", "--include", f.name,
                        "--only-show-errors"], env=env, check=True, timeout=120)
    for d in dirs:
        subprocess.run([aws, "s3", "sync", str(d), f"{root}{d}", "--exclude", "*~", "--exclude", ".DS_Store",
                        "--exclude", ".git*", "--only-show-errors"], env=env, check=True, timeout=120)


def run_harness(harness: list[str], scripts: Path, tmp: Path, dep: Deployment, n: int, case: str,
                laid_out: tuple[list[str], dict[str, str]], aws: str | None, aws_env: dict[str, str]) -> dict[str, Any]:
    args, env = laid_out
    env.update(dep.server_env)
    if dep.image:
        env["GP_JOB_DOCKER_IMAGE"] = dep.image
    if dep.uploads and aws:
        server_uploads(aws, aws_env, dep.uploads, [Path(args[7])], [Path(args[0])])
    env_file = tmp / f"env-{n}"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    done = subprocess.run([*harness, str(scripts), str(env_file), "2", "yes" if CASES[case][3] else "no", *args],
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "workdir": args[1], "meta": env["GP_JOB_METADATA_DIR"]}


def test_the_server_runs_jobs_on_five_deployments(tmp_path: Path, harness, aws_cli, images, docker_host: str, bucket: str,
                                                  s3_endpoint: str, s3_client, batch_queue, gcs_bucket: str, apptainer: str,
                                                  sif_cache, slurm_conf: str) -> None:
    creds = tmp_path / "aws-credentials"
    creds.write_text(f"[default]\naws_access_key_id = {os.environ['AWS_ACCESS_KEY_ID']}\n"
                     f"aws_secret_access_key = {os.environ['AWS_SECRET_ACCESS_KEY']}\n")
    s3_profile = {f"s3://{bucket}/": {"endpoint": s3_endpoint, "region": "us-east-1", "key_file": str(creds)}}
    aws_env = {"PATH": os.environ["PATH"], "AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_CONFIG_FILE": os.devnull,
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint, "HOME": str(tmp_path)}
    fast = {"poll_interval": 0.3}
    deployments = [
        Deployment("local+docker on nfs", "local", {**fast, "runner": "docker"}, images["bash-module"], "nfs:///",
                   {"DOCKER_HOST": docker_host}),
        Deployment("local+process on S3, the server uploads", "local", fast, None, None, {},
                   {"S3_ROOT": f"s3://{bucket}/local", "AWS_S3_PREFIX": f"s3://{bucket}/local"}, s3_profile,
                   uploads=f"s3://{bucket}/local"),
        Deployment("batch+process, an image with no gpstage", "batch",
                   {**fast, "job_queue": "overridden-by-GP_JOB_QUEUE", "endpoint": batch_queue["endpoint"],
                    "credentials_file": batch_queue["credentials_file"], "staging_grace_s": 60, "log_push_interval": 1,
                    "entry_bundle": images["bundle"]},
                   images["static-module"], None,
                   {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                    "AWS_SHARED_CREDENTIALS_FILE": str(creds)},
                   {"S3_ROOT": f"s3://{bucket}/batch", "GP_JOB_QUEUE": batch_queue["queue"]}, s3_profile,
                   uploads=f"s3://{bucket}/batch"),
        Deployment("slurm+apptainer on nfs", "slurm", {**fast, "runner": "apptainer", "staging_grace_s": 60},
                   images["bash-module"], "nfs:///",
                   {"SLURM_CONF": slurm_conf, "GPSTAGE_APPTAINER": apptainer, "GPSTAGE_SIF_CACHE": str(sif_cache),
                    "DOCKER_HOST": docker_host}),
        Deployment("local+process on GCS, uploads filtered off", "local", fast, None, f"gs://{gcs_bucket}/gp",
                   {"STORAGE_EMULATOR_HOST": os.environ["STORAGE_EMULATOR_HOST"],
                    "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}),
    ]
    runs = []
    with ThreadPoolExecutor(max_workers=len(deployments) * len(CASES)) as pool:
        for i, dep in enumerate(deployments):
            tmp = tmp_path / f"d{i}"
            scripts = install(tmp, dep)
            for j, case in enumerate(CASES):
                n = 10 * (i + 1) + j
                laid_out = lay_out(tmp, n, case)
                runs.append((dep, case, pool.submit(run_harness, harness, scripts, tmp, dep, n, case, laid_out, aws_cli,
                                                    aws_env)))
    for dep, case, future in runs:
        got = future.result()
        where = f"{dep.name}, {case}: {got}"
        assert got["submitExit"] == 0 and re.fullmatch(r"gp-\d+-[0-9a-f]{8}", got["jobId"]), where
        assert "badJson" not in got and got["slowestStatusMs"] < 60_000, where
        assert (got.get("state"), got.get("exitCode")) == EXPECTED[case], where
        assert "undetermined" not in got["states"] and got["createdAt"] and got["stoppedAt"], where
        meta, workdir = Path(got["meta"]), Path(got["workdir"])
        assert json.loads((meta / "exit_code.txt").read_text()) == {"exit_code": EXPECTED[case][1]}, where
        if case == "time-limit":
            assert "duration exceeded timeout" in got["statusReason"], where
        if case in ("ok", "fails"):
            assert (workdir / "counts.txt").read_text() == expected_counts(), where
            assert "wordcount: reading" in (meta / "stdout.txt").read_text(), where
            assert "wordcount: warning" in (meta / "stderr.txt").read_text(), where
            assert "2>" not in (meta / "exec.sh").read_text() and "exit_code" not in (meta / "exec.sh").read_text()
        if case == "cancel":
            assert "running" in got["states"], where
    queue = {r[0].name: r[2].result()["jobQueue"] for r in runs}
    assert queue["batch+process, an image with no gpstage"] == batch_queue["queue"]  # GP_JOB_QUEUE chose it
    # without the server's uploads, submit staged exactly the named input file, not the rest of the user's dir
    uploads = tmp_path / "d4" / "users" / "test user" / "uploads"
    listed = subprocess.run([str(Path(sys.executable).parent / "gpstage"), "ls", f"gs://{gcs_bucket}/gp{uploads}"],
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "words-50.txt" in listed.stdout and "someone-elses.txt" not in listed.stdout, listed.stdout
    # the server deletes a job (`<script> bash <n> <jobdir>`): its dirs on storage and its record go, the tasklib stays
    got = next(r[2].result() for r in runs if r[0].uploads and r[0].launcher == "local" and r[1] == "ok")
    gp_job = got["jobId"].split("-")[1]
    deleted = subprocess.run([str(tmp_path / "d1" / "gp-scripts" / "awsPostJobDelete.sh"), "bash", gp_job,
                              f'"{got["workdir"]}"'], env={}, capture_output=True, text=True, timeout=120)
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr

    def stored(path: str) -> int:
        return s3_client.list_objects_v2(Bucket=bucket, Prefix=f"local{path}/").get("KeyCount", 0)

    assert (stored(got["workdir"]), stored(got["meta"])) == (0, 0)
    assert stored(str(tmp_path / "d1" / "taskLib" / "wordcount.1.0")) > 0
    assert not list((tmp_path / "d1" / "state" / "jobs").glob(f"{got['jobId']}*"))


# ---- the local docker executor ------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 3])
def test_run_with_docker_exits_with_the_modules_code_and_streams_its_output(code: int, tmp_path: Path, images,
                                                                            docker_host: str, no_containers_left) -> None:
    scripts = install(tmp_path / "srv", Deployment("local docker", "local", {}, None, "nfs:///"))
    args, _ = lay_out(tmp_path, 1, "ok")
    workdir = Path(args[1])
    custom = tmp_path / "env-custom.sh"
    custom.write_text(f"export GP_JOB_DOCKER_IMAGE={images['bash-module']}\n")  # a site script sets the image
    argv = [str(scripts / "run-with-docker.sh"), "-c", str(custom), "-e", "GP_DRY_RUN=", "-u", "docker", "--",
            *args[5:9], str(code), "0"]
    done = subprocess.run(argv, cwd=workdir, env={"PATH": os.environ["PATH"], "DOCKER_HOST": docker_host},
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == code, done.stderr
    assert "wordcount: reading" in done.stdout and "wordcount: warning" not in done.stdout
    assert "wordcount: warning" in done.stderr and "wordcount: reading" not in done.stderr
    assert (workdir / "counts.txt").read_text() == expected_counts()


def test_run_with_docker_without_an_image_exits_64_like_genepatterns(tmp_path: Path) -> None:
    scripts = install(tmp_path / "srv", Deployment("local docker", "local", {}, None, "nfs:///"))
    done = subprocess.run([str(scripts / "run-with-docker.sh"), "-u", "docker", "echo", "hi"], env={}, capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout) == (64, "")
    assert "job.docker.image" in done.stderr


# ---- bad calls: no job id, a non-zero exit, one line ---------------------------------------------------------
def test_bad_calls_print_no_job_id_and_one_line(tmp_path: Path, bucket: str) -> None:
    scripts = install(tmp_path / "srv", Deployment("local", "local", {}, None, "nfs:///"))
    args, env = lay_out(tmp_path, 1, "ok")
    submit = str(scripts / "runOnBatch-v0.4.sh")
    cases = {
        "missing arguments": ([submit, *args[:3]], env),
        "unreachable storage": ([submit, *args], {**env, "S3_ROOT": f"s3://{bucket}"}),
    }
    unreachable = install(tmp_path / "dead", Deployment("dead", "local", {}, None, None,
                                                         profiles={f"s3://{bucket}/": {"endpoint": "http://127.0.0.1:9"}}))
    cases["unreachable storage"] = ([str(unreachable / "runOnBatch-v0.4.sh"), *args], {**env, "S3_ROOT": f"s3://{bucket}"})
    for name, (argv, call_env) in cases.items():
        done = subprocess.run(argv, env=call_env, cwd=args[1], capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and done.stdout == "", name
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
    status = subprocess.run([str(scripts / "awsCheckStatus.sh"), "gp-1-00000000"], env={}, capture_output=True,
                            text=True, timeout=60)
    assert (status.returncode, json.loads(status.stdout), status.stderr) == (1, {"jobs": []}, "")
    for bad, message in ((["--launcher", "nope"], "unknown launcher 'nope'"),
                         (["--env", "AWS_SECRET_ACCESS_KEY=x"], "a secret never goes into a script")):
        done = subprocess.run([*CLI, "install-scripts", str(tmp_path / "x"), "--config", str(tmp_path / "srv" / "config.toml"),
                               *bad], capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "x").exists()

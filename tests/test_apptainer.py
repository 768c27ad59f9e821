"""The apptainer runner on a real Apptainer and a real dockerd (no mocks, no skips), and the one-node
Slurm cluster that seed deployment 2 (Slurm + Apptainer) dispatches to.

Apptainer and Slurm come from scripts/services.py (fixtures in tests/fixtures_hpc.py).
The module image is gpstage/bash-module:1 (busybox + bash) from the private dockerd, converted to SIF
once per SIF cache. Timings are printed (``pytest -s``) with an ``[apptainer]`` prefix.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from examples.sample_job import expected_counts, lay_out_job
from gpstage.spec import JobSpec, Role
from tests.jobs import BIN, run_entry, write_spec

pytestmark = pytest.mark.timeout(600)  # a cold apptainer install, and a first build of the images, fit in this



def say(msg: str) -> None:
    print(f"[apptainer] {msg}", file=sys.stderr)


@pytest.fixture
def entry_env(apptainer: str, docker_host: str, sif_cache: Path, tmp_path: Path) -> dict[str, str]:
    """gpstage-entry's environment: the dummy AWS credentials of conftest and a marker it must not pass on."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    return {**os.environ, "GPSTAGE_APPTAINER": apptainer, "DOCKER_HOST": docker_host,
            "GPSTAGE_SIF_CACHE": str(sif_cache), "GPSTAGE_APPTAINER_SCRATCH": str(scratch),
            "GPSTAGE_TEST_HOST_ONLY": "host-secret-marker"}


def apptainer_job(tmp_path: Path, image: str, **kw) -> tuple[JobSpec, str]:
    spec = lay_out_job(tmp_path / "gp server", "nfs:///", image=image, runner="apptainer", **kw)
    return spec, write_spec(spec, tmp_path / "job.json")


def status(spec: JobSpec) -> dict:
    return json.loads(Path(spec.metadata_dir, "status.json").read_text())


def metadata(spec: JobSpec, name: str) -> str:
    return Path(spec.metadata_dir, name).read_text()


def processes_under(top: Path) -> list[str]:
    """Processes whose cwd is inside ``top`` (what a module left running)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = os.readlink(proc / "cwd")
                if cwd == str(top) or cwd.startswith(f"{top}/"):
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    found.append(f"{proc.name} {cmdline}")
            except OSError:
                pass
    return found


# ---- the runner ------------------------------------------------------------------------------------
def test_sample_module_runs_in_the_image_with_its_dirs_at_their_own_paths(tmp_path: Path, images, entry_env) -> None:
    spec, path = apptainer_job(tmp_path, images["bash-module"])
    started = time.monotonic()
    result = run_entry("--spec", path, env=entry_env)
    say(f"sample module, first job of the session: {time.monotonic() - started:.2f} s (run phase "
        f"{status(spec)['phases'].get('run')} s)")
    assert result.returncode == 0, result.stderr
    workdir = Path(spec.workdir)
    assert (workdir / "counts.txt").read_text() == expected_counts()
    assert (workdir / "results" / "summary.txt").read_text().startswith("input\twords.txt\n")
    assert Path(spec.dir(Role.TASKLIB).path, ".cache/last_run.txt").read_text() == "last input: words.txt\n"
    assert "wordcount: reading" in metadata(spec, "stdout.txt") and "wordcount: done" in metadata(spec, "stdout.txt")
    assert metadata(spec, "stderr.txt") == f"wordcount: warning: stop words from {spec.dir(Role.LIBRARIES).path}\n"
    assert json.loads(metadata(spec, "exit_code.txt")) == {"exit_code": 0}
    assert (status(spec)["state"], status(spec)["exit_code"]) == ("SUCCEEDED", 0)
    assert "runner apptainer" in metadata(spec, "gpstage-entry.log")
    assert not list(Path(entry_env["GPSTAGE_APPTAINER_SCRATCH"]).iterdir()), "the run's scratch dir was left behind"


def test_the_modules_exit_code_is_the_jobs(tmp_path: Path, images, entry_env) -> None:
    spec, path = apptainer_job(tmp_path, images["bash-module"], exit_code=3)
    result = run_entry("--spec", path, env=entry_env)
    assert result.returncode == 3, result.stderr
    assert json.loads(metadata(spec, "exit_code.txt")) == {"exit_code": 3}
    assert (status(spec)["state"], status(spec)["reason"]) == ("FAILED", "exited")
    assert (Path(spec.workdir) / "counts.txt").read_text() == expected_counts()  # outputs are kept on failure


def test_the_module_sees_only_the_jobs_environment(tmp_path: Path, images, entry_env) -> None:
    spec, path = apptainer_job(tmp_path, images["bash-module"], env={"GP_SAMPLE_OPTION": "two words", "R_LIBS": "/opt/r"})
    Path(spec.executable_path).write_text('env\necho "home-entries=$(ls -A "$HOME" | wc -l)"\necho "cwd=$(pwd)"\n')
    result = run_entry("--spec", path, env=entry_env)
    assert result.returncode == 0, result.stderr
    seen = dict(line.split("=", 1) for line in metadata(spec, "stdout.txt").splitlines() if "=" in line)
    assert seen["GP_SAMPLE_OPTION"] == "two words" and seen["R_LIBS"] == "/opt/r"
    assert (seen["WORKING_DIR"], seen["GP_METADATA_DIR"], seen["cwd"]) == (spec.workdir, spec.metadata_dir, spec.workdir)
    assert (seen["TASKLIB"], seen["INPUT_FILES_DIR"]) == (spec.dir(Role.TASKLIB).path, spec.dir(Role.INPUTS).path)
    assert not [k for k in seen if k.startswith(("AWS_", "GPSTAGE_", "DOCKER_", "PYTHON", "VIRTUAL_ENV"))], sorted(seen)
    text = metadata(spec, "stdout.txt")
    for secret in (os.environ["AWS_SECRET_ACCESS_KEY"], "host-secret-marker"):
        assert secret not in text
    assert seen["PATH"] != os.environ["PATH"] and str(BIN) not in seen["PATH"]  # the image's PATH, not the host's
    assert seen["home-entries"] == "0"  # an empty $HOME of its own: the host's (credential files) is not mounted


def test_outputs_belong_to_the_owner_of_the_working_dir(tmp_path: Path, images, entry_env) -> None:
    """The entry runs as root here (as a server may): the module runs as the working dir's owner."""
    assert os.getuid() == 0, "this machine's tests run as root"
    spec, path = apptainer_job(tmp_path, images["bash-module"])
    for top, dirs, files in os.walk(tmp_path / "gp server"):
        for name in [top, *(os.path.join(top, n) for n in dirs + files)]:
            os.chown(name, 4242, 4343)
    result = run_entry("--spec", path, env=entry_env)
    assert result.returncode == 0, result.stderr
    for out in (Path(spec.workdir) / "counts.txt", Path(spec.workdir) / "results", Path(spec.metadata_dir) / "stdout.txt"):
        assert (out.stat().st_uid, out.stat().st_gid) == (4242, 4343), out


def test_time_limit_ends_the_whole_module_and_is_142(tmp_path: Path, images, entry_env) -> None:
    spec, path = apptainer_job(tmp_path, images["bash-module"], sleep_s=60, resources={"time_s": 1})
    started = time.monotonic()
    result = run_entry("--spec", path, "--kill-grace", "2", env=entry_env)
    took = time.monotonic() - started
    assert result.returncode == 142, result.stderr
    assert took < 20, took
    assert (status(spec)["state"], status(spec)["reason"]) == ("FAILED", "timeout")
    assert json.loads(metadata(spec, "exit_code.txt")) == {"exit_code": 142}
    assert "sleeping 60s" in metadata(spec, "stdout.txt")
    assert not processes_under(tmp_path), "the module's processes outlived it"


def test_sigterm_to_the_entry_cancels_the_module_in_its_container(tmp_path: Path, images, entry_env) -> None:
    spec, path = apptainer_job(tmp_path, images["bash-module"], sleep_s=60)
    proc = subprocess.Popen([str(BIN / "gpstage-entry"), "--spec", path], env=entry_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = Path(spec.metadata_dir, "stdout.txt")
    deadline = time.monotonic() + 60
    while not (out.exists() and "sleeping" in out.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert (status(spec)["state"], status(spec)["signal"]) == ("CANCELLED", "SIGTERM")
    assert not processes_under(tmp_path), "the module's processes outlived the cancel"


def test_sif_is_built_once_and_reused(tmp_path: Path, images, entry_env, apptainer: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from container_entry.runners.apptainer import SifCache

    cache = tmp_path / "own-cache"
    env = {**entry_env, "GPSTAGE_SIF_CACHE": str(cache)}
    times = []
    for n in (1, 2):
        spec, path = apptainer_job(tmp_path / f"job{n}", images["bash-module"])
        started = time.monotonic()
        result = run_entry("--spec", path, env=env)
        times.append(time.monotonic() - started)
        assert result.returncode == 0, result.stderr
        assert (Path(spec.workdir) / "counts.txt").read_text() == expected_counts()
        sifs = list(cache.glob("*.sif"))
        assert len(sifs) == 1, sifs
        if n == 1:
            first = sifs[0].stat()
    assert (sifs[0].stat().st_ino, sifs[0].stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)  # not rebuilt
    say(f"gpstage-entry, sample module: {times[0]:.2f} s with the SIF build, {times[1]:.2f} s from the cache")

    # the lookup itself: the image ID from the daemon, then the cached file
    monkeypatch.setenv("DOCKER_HOST", entry_env["DOCKER_HOST"])
    hits = []
    for _ in range(5):
        sif = SifCache(apptainer, cache)
        started = time.monotonic()
        assert sif.resolve(images["bash-module"]) == str(sifs[0])
        hits.append(time.monotonic() - started)
        assert not sif.built
    say(f"SIF cache hit (image ID from dockerd + cached file): median {statistics.median(hits) * 1000:.0f} ms")

    # a fresh cache: build time alone
    fresh = SifCache(apptainer, tmp_path / "fresh-cache")
    started = time.monotonic()
    fresh.resolve(images["bash-module"])
    say(f"SIF build from docker-daemon: {time.monotonic() - started:.2f} s")
    assert fresh.built


def test_two_jobs_converting_the_same_image_at_once_build_it_once(tmp_path: Path, images, entry_env, apptainer: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from container_entry.runners.apptainer import SifCache

    monkeypatch.setenv("DOCKER_HOST", entry_env["DOCKER_HOST"])
    caches = [SifCache(apptainer, tmp_path / "shared") for _ in range(3)]
    results: list[str | BaseException] = [""] * len(caches)
    barrier = threading.Barrier(len(caches))

    def convert(i: int) -> None:
        barrier.wait()
        try:
            results[i] = caches[i].resolve(images["bash-module"])
        except BaseException as err:  # noqa: BLE001 - reported below
            results[i] = err

    threads = [threading.Thread(target=convert, args=(i,)) for i in range(len(caches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(set(results)) == 1 and isinstance(results[0], str), results
    assert sum(c.built for c in caches) == 1
    assert [p.name for p in (tmp_path / "shared").iterdir() if p.suffix != ".lock"] == [Path(results[0]).name]


def test_docker_archive_and_sif_images(tmp_path: Path, images, entry_env, docker_client) -> None:
    from container_entry.runners.apptainer import archive_key

    archive = tmp_path / "bash-module.tar"
    with open(archive, "wb") as f:
        f.writelines(docker_client.images.get(images["bash-module"]).save(named=True))
    spec, path = apptainer_job(tmp_path / "from archive", f"docker-archive:{archive}")
    assert run_entry("--spec", path, env=entry_env).returncode == 0, metadata(spec, "gpstage-entry.log")
    assert (Path(spec.workdir) / "counts.txt").read_text() == expected_counts()
    sif = tmp_path / "module.sif"
    shutil.copy(Path(entry_env["GPSTAGE_SIF_CACHE"], f"{archive_key(str(archive))}.sif"), sif)  # the archive's conversion
    spec, path = apptainer_job(tmp_path / "from sif", str(sif))
    assert run_entry("--spec", path, env=entry_env).returncode == 0, metadata(spec, "gpstage-entry.log")
    assert (Path(spec.workdir) / "counts.txt").read_text() == expected_counts()


@pytest.mark.parametrize("image, words", [
    ("docker-archive:{tmp}/not-an-image.tar", ["apptainer cannot convert", "not-an-image.tar", "to SIF"]),
    ("gpstage/no-such-module:1", ["gpstage/no-such-module:1", "cannot be pulled"]),
    ("{tmp}/missing.sif", ["missing.sif does not exist"]),
])
def test_an_image_that_cannot_be_converted_is_an_error_125(tmp_path: Path, images, entry_env, image: str,
                                                           words: list[str]) -> None:
    (tmp_path / "not-an-image.tar").write_bytes(b"this is not a docker save archive\n")
    spec, path = apptainer_job(tmp_path, image.format(tmp=tmp_path))
    started = time.monotonic()
    result = run_entry("--spec", path, env=entry_env, timeout=120)
    assert result.returncode == 125, result.stderr
    assert time.monotonic() - started < 60
    st = status(spec)
    assert (st["state"], st["exit_code"], st["reason"]) == ("ERROR", 125, "error")
    assert "\n" not in st["message"] and all(w in st["message"] for w in words), st["message"]
    assert json.loads(metadata(spec, "exit_code.txt")) == {"exit_code": 125}
    assert not (Path(spec.workdir) / "counts.txt").exists()


def test_an_image_without_bash_is_an_error_not_the_modules_exit_code(tmp_path: Path, entry_env) -> None:
    sandbox = tmp_path / "no-bash"  # a sandbox dir image with the usual mount points and nothing to run
    for sub in ("bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "var/tmp"):
        (sandbox / sub).mkdir(parents=True)
    spec, path = apptainer_job(tmp_path, str(sandbox))
    result = run_entry("--spec", path, env=entry_env)
    assert result.returncode == 125, result.stderr
    st = status(spec)
    assert st["state"] == "ERROR" and "apptainer could not run the module" in st["message"], st
    assert "bash" in st["message"] and "\n" not in st["message"]
    assert "FATAL" in metadata(spec, "stderr.txt")  # apptainer's own words, beside the module's (empty) stderr


@pytest.mark.parametrize("cancelled", [False, True])
def test_a_fatal_start_is_an_error_unless_the_entry_signalled_it(tmp_path: Path, cancelled: bool) -> None:
    """A cancel that reaches apptainer while it still sets the container up makes it fail with a FATAL
    and status 255 ("failed to find loop device: unexpected EOF", seen in CI): that is the cancel's doing,
    and the job must end CANCELLED, not in ERROR. A stand-in process fails the way apptainer does."""
    from container_entry.runners.apptainer import ApptainerRun
    from gpstage.errors import GpstageError

    log = tmp_path / "apptainer.log"
    fail = f'echo "FATAL:   container creation failed: unexpected EOF" >> "{log}"; exit 255'
    ready = tmp_path / "trap-set"
    script = f"trap '{fail}' TERM; touch \"{ready}\"; sleep 30 & wait" if cancelled else fail
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    run = ApptainerRun(proc, tmp_path / "scratch", "img", str(tmp_path / "stderr.txt"), str(log))
    try:
        if cancelled:
            deadline = time.monotonic() + 30
            while not ready.exists():  # the stand-in must catch the signal, as apptainer does
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.01)
            run.send_signal(signal.SIGTERM)
            assert run.wait(30) == 255
        else:
            with pytest.raises(GpstageError, match="apptainer could not run the module"):
                run.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "FATAL" in (tmp_path / "stderr.txt").read_text()  # apptainer's words reach the module's stderr either way


def test_apptainer_exec_overhead(tmp_path: Path, images, entry_env, apptainer: str, sif_cache: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty exec.sh: bash directly vs ``apptainer exec`` of the cached SIF (what the runner adds)."""
    from container_entry.runners.apptainer import SifCache

    monkeypatch.setenv("DOCKER_HOST", entry_env["DOCKER_HOST"])
    sif = SifCache(apptainer, sif_cache).resolve(images["bash-module"])
    empty = tmp_path / "exec.sh"
    empty.write_text("")

    def median_of(argv: list[str]) -> float:
        runs = []
        for _ in range(7):
            started = time.monotonic()
            subprocess.run(argv, check=True, cwd=tmp_path, stdin=subprocess.DEVNULL)
            runs.append(time.monotonic() - started)
        return statistics.median(runs)

    direct = median_of(["bash", str(empty)])
    contained = median_of([apptainer, "--quiet", "exec", "--cleanenv", "--contain", "--pid", "--pwd", str(tmp_path),
                           "--mount", f"type=bind,source={tmp_path},destination={tmp_path}", sif, "bash", str(empty)])
    say(f"empty exec.sh: bash {direct * 1000:.0f} ms, apptainer exec {contained * 1000:.0f} ms")
    assert contained < 5


# ---- Slurm ------------------------------------------------------------------------------------------
def scontrol_job(job_id: str, env: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, env=env, check=True).stdout
    return dict(field.split("=", 1) for field in out.split() if "=" in field)


def wait_for_job(job_id: str, env: dict[str, str], timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        job = scontrol_job(job_id, env)
        if job["JobState"] not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_slurm_runs_a_batch_job(tmp_path: Path, slurm_conf: str) -> None:
    env = {**os.environ, "SLURM_CONF": slurm_conf}
    started = time.monotonic()
    submitted = subprocess.run(["sbatch", "--parsable", "--wrap", "echo hi", "-o", str(tmp_path / "slurm-%j.out"),
                                "-D", str(tmp_path)], capture_output=True, text=True, env=env, check=True, timeout=30)
    job_id = submitted.stdout.strip().split(";")[0]
    job = wait_for_job(job_id, env)
    say(f"slurm: sbatch --wrap 'echo hi' → {job['JobState']} in {time.monotonic() - started:.2f} s")
    assert (job["JobState"], job["ExitCode"]) == ("COMPLETED", "0:0")
    assert (tmp_path / f"slurm-{job_id}.out").read_text() == "hi\n"


def test_slurm_job_runs_the_entry_with_the_apptainer_runner(tmp_path: Path, images, entry_env, slurm_conf: str) -> None:
    """Seed deployment 2 end to end: sbatch → gpstage-entry on the node → apptainer exec of the module."""
    spec, path = apptainer_job(tmp_path, images["bash-module"], exit_code=3)
    env = {**entry_env, "SLURM_CONF": slurm_conf}
    submitted = subprocess.run(["sbatch", "--parsable", "--export=ALL", "-o", str(tmp_path / "entry-%j.log"),
                                "-D", str(tmp_path), "--wrap", f"exec {BIN / 'gpstage-entry'} --spec '{path}'"],
                               capture_output=True, text=True, env=env, check=True, timeout=30)
    job = wait_for_job(submitted.stdout.strip().split(";")[0], env, timeout=120)
    assert (job["JobState"], job["ExitCode"]) == ("FAILED", "3:0"), job
    assert (Path(spec.workdir) / "counts.txt").read_text() == expected_counts()
    assert json.loads(metadata(spec, "exit_code.txt")) == {"exit_code": 3}

"""The GA4GH TES front end (docs/tes.md), driven by py-tes — a client nobody here wrote — against a real
server (uvicorn on 127.0.0.1) whose tasks run on real launchers: local+docker with S3 (moto) and a shared
path, batch+process (the local Batch API), slurm+apptainer."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import tes

from frontends.tes.models import TesTask as TesTaskModel
from frontends.tes.server import Refresher, create_app
from frontends.tes.service import TaskService, TesSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def tes_server(settings: TesSettings, token: str | None = None) -> Iterator[str]:
    """A TES server in this process on a free loopback port, with its background pass; stopped at the end."""
    import uvicorn

    service = TaskService(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service, token), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    refresher = Refresher(service)
    refresher.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the TES server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        refresher.stopped.set()
        thread.join(20)
        refresher.join(20)


def settings_for(pair: Any, storage_root: str, tmp_path: Path, **more: Any) -> TesSettings:
    return TesSettings(launcher=pair.launcher, launcher_settings=pair.settings, storage_root=storage_root,
                       work_root=str(tmp_path / "tes-work"), poll_interval=0.2, **more)


def wait_final(client: Any, task_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get_task(task_id, view="FULL")
        if task.state in ("COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"):
            return task
        assert time.monotonic() < deadline, f"task {task_id} still {task.state}"
        time.sleep(0.3)


@pytest.fixture
def local_docker(pair_for: Any, images: dict[str, str]) -> Any:
    pair = pair_for("local+docker")
    pair.images = images
    return pair


def two_executor_task(name: str, inputs: list[Any], outputs_url: str, images: dict[str, str]) -> Any:
    """Two executors in two images sharing a volume: busybox counts words, bash copies the count."""
    return tes.Task(
        name=name, volumes=["/vol"], tags={"project": "gpstage"},
        inputs=inputs + [tes.Input(content="one two three\n", path="/data/extra.txt", type="FILE")],
        outputs=[tes.Output(url=f"{outputs_url}/count.txt", path="/vol/count.txt", type="FILE"),
                 tes.Output(url=f"{outputs_url}/logs", path="/vol/*.log", path_prefix="/vol", type="FILE")],
        executors=[
            tes.Executor(image=images["busybox-module"], command=["sh", "-c", "cat /data/words.txt /data/extra.txt | wc -w"],
                         stdout="/vol/words.log"),
            tes.Executor(image=images["bash-module"], command=["bash", "-c", "tr -d ' ' < /vol/words.log > /vol/count.txt; "
                                                                              "echo done >&2"]),
        ])


def test_a_two_image_task_with_s3_inputs_and_outputs_through_py_tes(local_docker: Any, tmp_path: Path, bucket: str,
                                                                     s3_client: Any) -> None:
    s3_client.put_object(Bucket=bucket, Key="in/words.txt", Body=b"alpha beta gamma delta\n")
    root = f"s3://{bucket}/tes"
    with tes_server(settings_for(local_docker, root, tmp_path, allow=[f"s3://{bucket}/"])) as url:
        client = tes.HTTPClient(url, timeout=30)
        assert client.get_service_info().type["artifact"] == "tes"
        task = two_executor_task("count-words", [tes.Input(url=f"s3://{bucket}/in/words.txt", path="/data/words.txt")],
                                 f"s3://{bucket}/out", local_docker.images)
        task_id = client.create_task(task)
        done = wait_final(client, task_id)
        assert done.state == "COMPLETE", done.logs
        assert s3_client.get_object(Bucket=bucket, Key="out/count.txt")["Body"].read() == b"7\n"
        assert s3_client.get_object(Bucket=bucket, Key="out/logs/words.log")["Body"].read().strip() == b"7"
        log = done.logs[0]
        assert [e.exit_code for e in log.logs] == [0, 0] and "done" in log.logs[1].stderr
        assert sorted(o.path for o in log.outputs) == ["/vol/count.txt", "/vol/words.log"]
        assert done.tags == {"project": "gpstage"} and done.inputs[1].content == "one two three\n"
        basic = client.get_task(task_id, view="BASIC")
        assert basic.inputs[1].content is None and basic.logs[0].logs[0].stdout is None
        minimal = requests.get(f"{url}/ga4gh/tes/v1/tasks/{task_id}", timeout=10).json()
        assert minimal == {"id": task_id, "state": "COMPLETE"}
        full = requests.get(f"{url}/ga4gh/tes/v1/tasks/{task_id}", params={"view": "FULL"}, timeout=10).text
        assert os.environ["AWS_SECRET_ACCESS_KEY"] not in full and os.environ["AWS_ACCESS_KEY_ID"] not in full


def test_an_executor_failing_with_3_is_an_executor_error(local_docker: Any, tmp_path: Path) -> None:
    with tes_server(settings_for(local_docker, "nfs:///", tmp_path)) as url:
        client = tes.HTTPClient(url, timeout=30)
        task_id = client.create_task(tes.Task(executors=[
            tes.Executor(image=local_docker.images["bash-module"], command=["bash", "-c", "echo failing >&2; exit 3"]),
            tes.Executor(image=local_docker.images["bash-module"], command=["touch", "/never"])]))
        done = wait_final(client, task_id)
        assert done.state == "EXECUTOR_ERROR"
        assert [e.exit_code for e in done.logs[0].logs] == [3] and "failing" in done.logs[0].logs[0].stderr


def test_a_shared_path_task_listing_paging_and_cancel(local_docker: Any, tmp_path: Path) -> None:
    """Inputs and outputs on a shared path (file://), nfs:/// storage; list with filters and pages; cancel."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "words.txt").write_text("a b c\n")
    with tes_server(settings_for(local_docker, "nfs:///", tmp_path, allow=[f"file://{shared}"])) as url:
        client = tes.HTTPClient(url, timeout=30)
        image = local_docker.images["bash-module"]
        ok = client.create_task(tes.Task(name="copy-1", inputs=[tes.Input(url=f"file://{shared}/words.txt", path="/data/w")],
                                         outputs=[tes.Output(url=f"file://{shared}/out/w", path="/data/w2")],
                                         executors=[tes.Executor(image=image, command=["cp", "/data/w", "/data/w2"])]))
        slow = client.create_task(tes.Task(name="sleep-1", executors=[tes.Executor(image=image, command=["sleep", "300"])]))
        assert wait_final(client, ok).state == "COMPLETE"
        assert (shared / "out/w").read_text() == "a b c\n"
        wait_running(client, slow)
        client.cancel_task(slow)
        assert wait_final(client, slow, timeout=90).state == "CANCELED"
        names = requests.get(f"{url}/ga4gh/tes/v1/tasks", params={"name_prefix": "copy-", "view": "BASIC"}, timeout=10)
        assert [t["id"] for t in names.json()["tasks"]] == [ok]  # py-tes 1.1 sends no name_prefix
        first = client.list_tasks(page_size=1)
        assert len(first.tasks) == 1 and first.next_page_token
        second = client.list_tasks(page_size=1, page_token=first.next_page_token)
        assert {first.tasks[0].id, second.tasks[0].id} == {ok, slow}
        canceled = requests.get(f"{url}/ga4gh/tes/v1/tasks", params={"state": "CANCELED"}, timeout=10).json()
        assert [t["id"] for t in canceled["tasks"]] == [slow]


def wait_running(client: Any, task_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while client.get_task(task_id).state != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.2)


@pytest.mark.parametrize("task, message", [
    ({"executors": []}, "no executors"),
    ({"executors": [{"image": "x", "command": ["true"]}], "inputs": [{"url": "nosuch://b/k", "path": "/data/k"}]},
     "unknown storage scheme"),
    ({"executors": [{"image": "x", "command": ["true"]}], "inputs": [{"url": "file:///etc/passwd", "path": "data/k"}]},
     "not an absolute, normalised container path"),
    ({"executors": [{"image": "x", "command": ["true"]}], "outputs": [{"url": "s3://elsewhere/o", "path": "/data/o"}]},
     "outside the URL prefixes"),
    ({"executors": [{"image": "x", "command": ["true"]}], "inputs": [{"content": "x", "path": "/etc/hosts"}]},
     "mounted over the image's own /etc"),
])
def test_bad_tasks_are_400_with_one_line(tmp_path: Path, task: dict[str, Any], message: str, pair_for: Any) -> None:
    pair = pair_for("local+process")
    pair.settings["runner"] = "docker"  # checked, never started: no task here gets that far
    with tes_server(settings_for(pair, "nfs:///", tmp_path)) as url:
        r = requests.post(f"{url}/ga4gh/tes/v1/tasks", data=json.dumps(task), timeout=10)
        assert r.status_code == 400 and message in r.json()["msg"] and "\n" not in r.json()["msg"], r.text
        assert requests.get(f"{url}/ga4gh/tes/v1/tasks", timeout=10).json() == {"tasks": []}


def test_token_is_required_and_content_up_to_128_kib_is_accepted(tmp_path: Path, pair_for: Any) -> None:
    pair = pair_for("local+process")
    pair.settings["runner"] = "docker"
    token = uuid.uuid4().hex
    with tes_server(settings_for(pair, "nfs:///", tmp_path), token=token) as url:
        tasks = f"{url}/ga4gh/tes/v1/tasks"
        assert requests.get(tasks, timeout=10).status_code == 401
        assert requests.get(tasks, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        ok = {"Authorization": f"Bearer {token}"}
        assert requests.get(tasks, headers=ok, timeout=10).status_code == 200
        big = {"executors": [{"image": "x", "command": ["true"]}], "inputs": [{"content": "x" * (128 * 1024 + 1),
                                                                               "path": "/data/big"}]}
        refused = requests.post(tasks, data=json.dumps(big), headers=ok, timeout=10)
        assert refused.status_code == 400 and "128 KiB" in refused.json()["msg"]
        huge = requests.post(tasks, data=b"x" * (5 * 2**20), headers=ok, timeout=30)
        assert huge.status_code == 413


def test_a_finished_task_is_cleaned_with_its_storage_prefix_after_keep_for(local_docker: Any, tmp_path: Path,
                                                                         bucket: str, s3_client: Any) -> None:
    root = f"s3://{bucket}/tes"
    with tes_server(settings_for(local_docker, root, tmp_path, keep_for=3)) as url:
        client = tes.HTTPClient(url, timeout=30)
        task_id = client.create_task(tes.Task(inputs=[tes.Input(content="x", path="/data/x")], executors=[
            tes.Executor(image=local_docker.images["bash-module"], command=["cp", "/data/x", "/data/y"])]))
        assert wait_final(client, task_id).state == "COMPLETE"
        assert s3_client.list_objects_v2(Bucket=bucket, Prefix="tes/").get("KeyCount", 0) > 0  # its dirs, until cleaned
        deadline = time.monotonic() + 120
        while requests.get(f"{url}/ga4gh/tes/v1/tasks/{task_id}", timeout=10).status_code != 404:
            assert time.monotonic() < deadline, "the finished task was not cleaned"
            time.sleep(0.3)
    assert s3_client.list_objects_v2(Bucket=bucket, Prefix="tes/").get("KeyCount") == 0
    assert not (tmp_path / "tes-work" / task_id).exists()


def test_serving_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    refused = run_cli("tes", "serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert refused.returncode == 2 and "not a loopback address" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_local_process_is_refused_at_start(tmp_path: Path, pair_for: Any) -> None:
    from gpstage.errors import BadInput

    with pytest.raises(BadInput, match="cannot run a task's executors in their images"):
        TaskService(settings_for(pair_for("local+process"), "nfs:///", tmp_path))


def toml_table(name: str, values: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items() if v is not None)


def write_settings(tmp_path: Path, pair: Any) -> Path:
    """The settings file every gpstage process of the test reads: [tes] on nfs:/// and the pair's launcher;
    returns the dir outputs may be written to."""
    import os

    out = tmp_path / "out"
    Path(os.environ["GPSTAGE_CONFIG"]).write_text(
        toml_table("tes", {"launcher": pair.launcher, "storage_root": "nfs:///", "poll_interval": 0.2,
                           "work_root": str(tmp_path / "tes-work"), "allow": [f"file://{out}"]})
        + toml_table(f"launchers.{pair.launcher}", pair.settings))
    return out


@contextmanager
def serve_process(port: int) -> Iterator[str]:
    """``gpstage tes serve`` as a process (the settings file names the launcher); stopped by pid."""
    import subprocess
    import sys

    exe = Path(sys.executable).parent / "gpstage"
    proc = subprocess.Popen([str(exe), "tes", "serve", "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{url}/ga4gh/tes/v1/service-info", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_task_outlives_a_server_restart(local_docker: Any, tmp_path: Path) -> None:
    out = write_settings(tmp_path, local_docker)
    port = free_port()
    task = tes.Task(outputs=[tes.Output(url=f"file://{out}/done.txt", path="/data/done.txt")], executors=[
        tes.Executor(image=local_docker.images["bash-module"], command=["bash", "-c", "sleep 4; echo ok > /data/done.txt"])])
    with serve_process(port) as url:
        task_id = tes.HTTPClient(url, timeout=30).create_task(task)
        wait_running(tes.HTTPClient(url, timeout=30), task_id)
    # the server is gone while the task runs; a new one finds it, sees it end and delivers its output
    with serve_process(port) as url:
        done = wait_final(tes.HTTPClient(url, timeout=30), task_id, timeout=120)
        assert done.state == "COMPLETE" and (out / "done.txt").read_text() == "ok\n"


def test_export_and_run_a_task_file_from_the_cli(local_docker: Any, tmp_path: Path) -> None:
    from tests.conftest import run_cli

    out = write_settings(tmp_path, local_docker)
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps({"executors": [{"image": local_docker.images["bash-module"],
                                                    "command": ["bash", "-c", "echo hi > /out/hi.txt; exit 0"]}],
                                     "outputs": [{"url": f"file://{out}/hi.txt", "path": "/out/hi.txt"}]}))
    ran = run_cli("run", str(task_file), "--json", timeout=180)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert json.loads(ran.stdout)["task"]["state"] == "COMPLETE" and (out / "hi.txt").read_text() == "hi\n"
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps({"job_id": "j1", "storage_root": "s3://b/gp", "image": "gpstage/bash-module:1",
                                "dirs": [{"role": "workdir", "path": "/srv/j1"}, {"role": "inputs", "path": "/srv/in"}]}))
    exported = run_cli("tes", "export", str(spec))
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(exported.stdout)
    assert doc["executors"] == [{"image": "gpstage/bash-module:1", "command": ["bash", "/srv/j1/.gp_metadata/exec.sh"],
                                 "workdir": "/srv/j1", "env": {}}]
    assert {"url": "s3://b/gp/srv/in", "path": "/srv/in", "type": "DIRECTORY", "name": "inputs"} in doc["inputs"]
    assert {"url": "s3://b/gp/srv/j1", "path": "/srv/j1", "type": "DIRECTORY", "name": "workdir"} in doc["outputs"]
    assert TesTaskModel.model_validate(doc).executors[0].image == "gpstage/bash-module:1"


@pytest.mark.parametrize("pair_name", ["batch+process", "slurm+apptainer"])
def test_one_task_on_batch_and_on_slurm(pair_name: str, pair_for: Any, tmp_path: Path, bucket: str, s3_client: Any) -> None:
    """batch+process (the local Batch API; the entry mounted into the task's image) with S3 storage, and
    slurm+apptainer on a shared path."""
    pair = pair_for(pair_name)
    s3_client.put_object(Bucket=bucket, Key="in/words.txt", Body=b"x y\n")
    root = f"s3://{bucket}/tes" if pair.launcher == "batch" else "nfs:///"
    out = tmp_path / "out"
    with tes_server(settings_for(pair, root, tmp_path, allow=[f"s3://{bucket}/", f"file://{out}"])) as url:
        client = tes.HTTPClient(url, timeout=30)
        task_id = client.create_task(tes.Task(
            inputs=[tes.Input(url=f"s3://{bucket}/in/words.txt", path="/data/words.txt")],
            outputs=[tes.Output(url=f"s3://{bucket}/out/n.txt", path="/data/n.txt"),
                     tes.Output(url=f"file://{out}/n.txt", path="/data/n.txt")],
            executors=[tes.Executor(image=pair.image, command=["bash", "-c", "wc -w < /data/words.txt > /data/n.txt"])]))
        done = wait_final(client, task_id, timeout=240)
        assert done.state == "COMPLETE", done.logs
    assert s3_client.get_object(Bucket=bucket, Key="out/n.txt")["Body"].read() == b"2\n"
    assert (out / "n.txt").read_text() == "2\n"


def test_a_task_whose_server_died_before_submitting_it_is_a_system_error(tmp_path: Path, pair_for: Any) -> None:
    """The task document exists, no job record does, and the process that took the task is gone."""
    from gpstage.records import Owner

    pair = pair_for("local+process")
    pair.settings["runner"] = "docker"
    service = TaskService(settings_for(pair, "nfs:///", tmp_path))
    dead = Owner.current().model_copy(update={"pid": 2**22 + 1})  # above PID_MAX_LIMIT: a process that cannot exist
    service._save("tes-orphan", {"task": {"id": "tes-orphan", "creation_time": "2026-01-01T00:00:00Z",
                                          "executors": [{"image": "x", "command": ["true"]}]},
                                 "submitter": dead.model_dump(mode="json")})
    assert service.get("tes-orphan")["state"] == "INITIALIZING"
    service.refresh()
    view = service.get("tes-orphan", "FULL")
    assert view["state"] == "SYSTEM_ERROR" and "stopped before it was submitted" in view["logs"][0]["system_logs"][0]

"""The local images (images/build.py) on a real private dockerd: what is in them, what is not, and that a
rebuild with nothing changed is a no-op while a source change rebuilds only the fast part."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _builder():
    from fixtures_docker import load_image_builder

    return load_image_builder()


def test_bash_module_runs_bash_with_exit_code(images, run_container):
    code, out = run_container(images["bash-module"], ["bash", "-c", "echo hi; exit 3"])
    assert (code, out) == (3, "hi\n")


def test_bash_module_has_bash_and_basic_tools_but_no_python(images, run_container, docker_client):
    script = (
        "set -e; test -x /bin/bash; for t in sh ls cat grep sed tar env; do command -v $t >/dev/null; done; "
        "test -d /tmp && [ \"$(stat -c %a /tmp)\" = 1777 ]; "
        "if command -v python3 || command -v python || ls / /bin /usr/bin | grep -i python; then exit 7; fi; "
        "echo clean"
    )
    assert run_container(images["bash-module"], ["bash", "-c", script]) == (0, "clean\n")
    assert docker_client.images.get(images["bash-module"]).attrs["Size"] < 20 * 2**20


def test_runtime_runs_gpstage(images, run_container):
    build = _builder()
    version = build.gpstage_version()
    assert images["runtime"] == f"gpstage/runtime:{version}"
    code, out = run_container(images["runtime"], ["gpstage", "--help"])
    assert code == 0, out
    assert "Usage" in out
    # gpstage and every requirement of the extras the image promises are installed and consistent
    check = r"""
import sys, gpstage
from importlib.metadata import distribution, requires
from pip._vendor.packaging.requirements import Requirement
extras = {"", *sys.argv[1].split(",")}
for line in requires("gpstage") or []:
    req = Requirement(line)  # its marker decides: an extra's, or this python's (tomli below 3.11)
    if req.marker is None or any(req.marker.evaluate({"extra": extra}) for extra in extras):
        distribution(req.name)  # raises PackageNotFoundError if missing
print(gpstage.__version__)
"""
    code, out = run_container(images["runtime"], ["/opt/gpstage/bin/python", "-c", check, build.EXTRAS])
    assert (code, out.strip()) == (0, version), out
    code, out = run_container(images["runtime"], ["/opt/gpstage/bin/pip", "check"])
    assert code == 0, out
    code, out = run_container(images["runtime"], ["bash", "-c", "test -x /usr/local/bin/gpstage-entry && echo ok"])
    assert (code, out) == (0, "ok\n")


def test_runtime_has_runS3OnBatch_when_the_source_tree_does(images, run_container):
    source = ROOT / "container_entry" / "runS3OnBatch.sh"
    code, out = run_container(images["runtime"], [
        "bash", "-c", "p=/usr/local/bin/runS3OnBatch.sh; if [ -e $p ]; then stat -c %a $p; cat $p; else echo absent; fi"])
    assert code == 0, out
    if source.is_file():
        mode, _, content = out.partition("\n")
        assert mode == "755"
        assert content == source.read_text()
        code, path = run_container(images["runtime"], ["bash", "-c", "command -v runS3OnBatch.sh"])
        assert (code, path) == (0, "/usr/local/bin/runS3OnBatch.sh\n")
    else:
        assert out == "absent\n"


def test_runtime_carries_no_credentials_and_no_host_ca(images, run_container, docker_client):
    config = docker_client.images.get(images["runtime"]).attrs["Config"]
    assert [e.split("=", 1)[0] for e in config["Env"]] == ["PATH"]
    script = r"""
set -e
env | grep -iE '^(AWS|GOOGLE|GCS|AZURE|DOCKER|PIP|REQUESTS|SSL|CURL)' && exit 11
for p in /root/.aws /root/.azure /root/.config/gcloud /root/.docker /root/.cache /root/.pip /etc/pip.conf; do
  if [ -e $p ]; then echo "found $p"; exit 12; fi
done
[ -z "$(ls -A /usr/local/share/ca-certificates)" ] || exit 13
/opt/gpstage/bin/python - <<'EOF'
import glob, re
pem = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.S)
debian = set()
for path in glob.glob("/usr/share/ca-certificates/mozilla/*.crt"):
    debian.update(pem.findall(open(path).read()))
bundle = pem.findall(open("/etc/ssl/certs/ca-certificates.crt").read())
foreign = [c for c in bundle if c not in debian]
assert bundle and not foreign, f"{len(foreign)} certificates not from Debian's ca-certificates"
print("clean", len(bundle))
EOF
"""
    code, out = run_container(images["runtime"], ["bash", "-c", script], environment={})
    assert code == 0, out
    assert out.startswith("clean ")


def test_second_ensure_images_is_a_fast_noop(images, docker_host, docker_client):
    refs = {name: ref for name, ref in images.items() if name != "bundle"}  # the entry bundle is a dir, not an image
    before = {name: docker_client.images.get(ref).id for name, ref in refs.items()}
    messages: list[str] = []
    t0 = time.monotonic()
    again = _builder().ensure_images(docker_host, log=messages.append)
    elapsed = time.monotonic() - t0
    assert again == images
    assert {name: docker_client.images.get(again[name]).id for name in refs} == before
    assert elapsed < 5, f"no-op rebuild took {elapsed:.1f}s"
    assert messages and all(m.endswith("up to date") for m in messages), messages


def test_source_change_rebuilds_only_the_runtime_layer(images, docker_host, docker_client, run_container,
                                                        tmp_path, monkeypatch):
    """A copy of the source tree with one edit: the wheel is rebuilt and installed on the cached base."""
    build = _builder()
    tree = tmp_path / "src"
    for name in build.source_files():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    marker = uuid.uuid4().hex
    with open(tree / "gpstage" / "__init__.py", "a") as f:
        f.write(f"\nTEST_MARKER = {marker!r}\n")
    monkeypatch.setattr(build, "ROOT", tree)
    monkeypatch.setattr(build, "RUNTIME_REPO", "gpstage-test/runtime")
    ref = f"gpstage-test/runtime:{build.gpstage_version()}"
    messages: list[str] = []
    try:
        got = build.ensure_images(docker_host, which=("runtime",), log=messages.append)
        assert got == {"runtime": ref}
        # base and dependencies came from their cached images: only the gpstage layer is new
        assert not any("debootstrap" in m or "dependency" in m for m in messages), messages
        code, out = run_container(ref, ["/opt/gpstage/bin/python", "-c", "import gpstage; print(gpstage.TEST_MARKER)"])
        assert (code, out.strip()) == (0, marker)
        parent_layers = docker_client.images.get(images["runtime"]).attrs["RootFS"]["Layers"]
        layers = docker_client.images.get(ref).attrs["RootFS"]["Layers"]
        assert len(layers) == len(parent_layers) and layers[:-1] == parent_layers[:-1]
    finally:
        docker_client.images.remove(ref, force=True)


def test_no_containers_left_behind(images, run_container, docker_client):
    """run_container removes its containers, after a failing command too."""
    from fixtures_docker import SESSION, TEST_LABEL

    assert run_container(images["bash-module"], ["bash", "-c", "exit 9"])[0] == 9
    assert docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={SESSION}"}) == []


def test_the_bundles_test_images_hold_nothing_of_gpstage(images, run_container, docker_client):
    """What the entry bundle's tests rely on (tests/test_entry_bundle.py): no libc or /lib in the static
    image, no bash in the busybox one, a non-root USER in the user one, no python in any of them."""
    probe = "for p in /lib /lib64 /usr/lib; do [ -e $p ] && echo has $p; done; command -v bash; command -v python3; true"
    assert run_container(images["static-module"], ["sh", "-c", probe]) == (0, "/bin/bash\n")
    assert run_container(images["busybox-module"], ["sh", "-c", probe]) == (0, "")
    assert docker_client.images.get(images["user-module"]).attrs["Config"]["User"] == "1000:1000"

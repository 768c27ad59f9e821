"""The job spec: plain data describing one GenePattern job, as JSON or YAML (``spec_version: 1``).

A job is a set of role dirs (TASKLIB, inputs, libraries, metadata, working dir), each at an absolute
path that is identical on the server and in the container, each with a storage URL and a direction.
Unknown keys are rejected so that a typo never silently does nothing.
"""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gpstage.errors import BadInput
from gpstage.urls import dir_url, split_url
from gpstage.validation import check_env_names, format_validation_error

SPEC_VERSION = 1  # the job spec format this gpstage writes and reads; an entry refuses a newer one
# GenePattern's upload excludes, written so they match at any depth (aws-style globs cross "/").
DEFAULT_STAGE_IN_EXCLUDES = ("*~", ".DS_Store", "*/.DS_Store", ".git*", "*/.git*")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Role(str, Enum):
    TASKLIB = "tasklib"
    INPUTS = "inputs"
    LIBRARIES = "libraries"
    METADATA = "metadata"
    WORKDIR = "workdir"


class Direction(str, Enum):
    IN = "in"  # server -> storage before the run; storage -> container at start
    OUT = "out"  # container -> storage after the run; storage -> server at the end
    INOUT = "inout"

    @property
    def pushes_in(self) -> bool:
        return self in (Direction.IN, Direction.INOUT)

    @property
    def pulls_out(self) -> bool:
        return self in (Direction.OUT, Direction.INOUT)

    def covers(self, other: Direction) -> bool:
        return self is Direction.INOUT or self is other


ROLE_DIRECTIONS = {
    Role.TASKLIB: Direction.INOUT,  # some modules write into their TASKLIB
    Role.INPUTS: Direction.IN,
    Role.LIBRARIES: Direction.IN,
    Role.METADATA: Direction.INOUT,
    Role.WORKDIR: Direction.INOUT,
}
REQUIRED_ROLES = (Role.WORKDIR, Role.METADATA)  # exactly one each
SINGLE_ROLES = (Role.TASKLIB,)  # at most one
LEGACY_METADATA_SUBDIR = ".gp_metadata"  # runS3OnBatch.sh: GP_METADATA_DIR defaults to $WORKING_DIR/.gp_metadata


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _absolute_normalised(value: str, what: str) -> str:
    if not os.path.isabs(value):
        raise ValueError(f"{what} {value!r} must be an absolute path")
    if os.path.normpath(value) != value.rstrip("/") or "\x00" in value:
        raise ValueError(f"{what} {value!r} must be normalised (no '..', '.', '//' or trailing '/')")
    return value


class InputSource(_Strict):
    """A file placed into an inputs dir from a URL on any scheme, instead of from the server's disk
    (docs/input-cache.md, "Inputs by URL")."""

    source: str = Field(description="URL of the file (s3://…, gs://…, az://…, file:///…, any provider's scheme)")
    name: str | None = Field(None, description="its path relative to the dir; default: the URL's last part")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        split_url(v)
        if "://" not in v or v.endswith("/"):
            raise ValueError(f"source {v!r} must be the URL of a file (scheme://…/name)")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (v.startswith("/") or v.endswith("/") or any(p in ("", ".", "..") for p in v.split("/"))
                              or "\x00" in v):
            raise ValueError(f"name {v!r} must be a relative path inside the dir (no '..', '.', '//', leading or trailing '/')")
        return v

    @property
    def rel(self) -> str:
        return self.name or self.source.rstrip("/").rpartition("/")[2]


class DirSpec(_Strict):
    """One role dir of the job."""

    role: Role
    path: str = Field(description="absolute normalised path, identical on the server and in the container")
    url: str | None = Field(None, description="storage URL; default: storage_root joined with path")
    direction: Direction | None = Field(None, description="default by role: tasklib/metadata/workdir inout, inputs/libraries in")
    exclude: list[str] | None = Field(None, description="aws-style globs relative to the dir; stage-in default: GenePattern's")
    include: list[str] | None = Field(None, description="stage only the files matching these aws-style globs relative to "
                                      "the dir (e.g. the input files a command line names); the rest is neither copied "
                                      "nor deleted; default: all")
    sources: list[InputSource] | None = Field(None, description="inputs dir: files placed into it from URLs at stage-in "
                                              "(server-side when on the job's store), in addition to its local files")
    private: bool | None = Field(None, description="inputs dir: its files are never put in the input cache "
                                 "(GenePattern deletes private inputs after the job)")
    mount_at: str | None = Field(None, description="where a container sees this dir (a TES task's container path, "
                                 "docs/tes.md); default: its own path, as for every GenePattern job")

    @field_validator("mount_at")
    @classmethod
    def _mount_at(cls, v: str | None) -> str | None:
        return None if v is None else _absolute_normalised(v, "mount_at")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        return _absolute_normalised(v, "path").rstrip("/") or "/"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            split_url(v)
        return v

    @model_validator(mode="after")
    def _inputs_only(self) -> DirSpec:
        for name in ("sources", "private"):
            if getattr(self, name) is not None and self.role is not Role.INPUTS:
                raise ValueError(f"{name} is for inputs dirs, not {self.role.value}")
        return self

    @property
    def effective_direction(self) -> Direction:
        return self.direction or ROLE_DIRECTIONS[self.role]


class Resources(_Strict):
    cpus: float | None = Field(None, gt=0, description="cores; backends needing integers round up")
    memory_mib: int | None = Field(None, gt=0)
    time_s: int | None = Field(None, gt=0, description="wall-time limit enforced by the entry (exit 142)")


class Executor(_Strict):
    """One command of a job that runs a sequence of them (a GA4GH TES task, docs/tes.md), each in its own
    image, as an argv: no shell is needed in the image. Paths are the container's (``mount_at``)."""

    image: str = Field(min_length=1)
    command: list[str] = Field(min_length=1, description="argv; the first item is the program")
    workdir: str | None = Field(None, description="the container's working dir; default: the image's")
    stdin: str | None = Field(None, description="container path of a file piped to stdin")
    stdout: str | None = Field(None, description="container path its stdout is written to (default: the metadata dir)")
    stderr: str | None = Field(None, description="container path its stderr is written to (default: the metadata dir)")
    env: dict[str, str] = Field(default_factory=dict)
    ignore_error: bool = Field(False, description="a non-zero exit does not stop the sequence")

    @field_validator("workdir", "stdin", "stdout", "stderr")
    @classmethod
    def _paths(cls, v: str | None) -> str | None:
        return None if v is None else _absolute_normalised(v, "executor path")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env_names(v)


class Module(_Strict):
    name: str | None = None
    version: str | None = None
    lsid: str | None = Field(None, description="GenePattern module id, used for labels and default image tags")


class Hooks(_Strict):
    pre: list[str] = Field(default_factory=list, description="absolute paths of bash scripts run before the executable")
    post: list[str] = Field(default_factory=list, description="absolute paths of bash scripts run after it")

    @field_validator("pre", "post")
    @classmethod
    def _abs(cls, v: list[str]) -> list[str]:
        return [_absolute_normalised(p, "hook") for p in v]


class JobSpec(_Strict):
    """A job: where its dirs live locally and on storage, what to run, in which image, with what limits."""

    spec_version: Literal[1] = SPEC_VERSION
    job_id: str
    storage_root: str = Field(description="URL under which each dir is stored at root + its absolute path")
    dirs: list[DirSpec] = Field(min_length=1)
    executable: str | None = Field(None, description="default: <metadata dir>/exec.sh; run with bash")
    image: str | None = Field(None, description="the MODULE's container image")
    runner: str | None = Field(None, description="where exec.sh runs: process, docker, apptainer, ...")
    env: dict[str, str] = Field(default_factory=dict, description="non-secret environment for the module")
    resources: Resources = Field(default_factory=Resources)
    module: Module | None = None
    hooks: Hooks = Field(default_factory=Hooks)
    executors: list[Executor] | None = Field(None, description="run these commands in order, each in its own image, "
                                             "instead of exec.sh (a TES task, docs/tes.md)")
    input_cache: bool | None = Field(None, description="place input files through the content-addressed cache on "
                                     "storage (docs/input-cache.md); default: the storage profile's input_cache, else off")

    @field_validator("job_id")
    @classmethod
    def _job_id(cls, v: str) -> str:
        if not _JOB_ID.match(v):
            raise ValueError(f"job_id {v!r} must be 1-128 of letters, digits, '.', '_', '-' starting with a letter or digit")
        return v

    @field_validator("storage_root")
    @classmethod
    def _root(cls, v: str) -> str:
        if "://" not in v and not os.path.isabs(v):
            raise ValueError(f"storage_root {v!r} must be a URL (s3://bucket/prefix, nfs:///, ...) or an absolute path")
        split_url(v)
        return v

    @field_validator("executable")
    @classmethod
    def _exe(cls, v: str | None) -> str | None:
        return None if v is None else _absolute_normalised(v, "executable")

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        return check_env_names(v)

    @model_validator(mode="before")
    @classmethod
    def _legacy_metadata(cls, data: Any) -> Any:
        """GenePattern's convention: without a metadata dir, it is ``<workdir>/.gp_metadata``."""
        if isinstance(data, dict) and isinstance(data.get("dirs"), list):
            dirs = data["dirs"]
            roles = [d.get("role") for d in dirs if isinstance(d, dict)]
            work = [d for d in dirs if isinstance(d, dict) and d.get("role") == "workdir"]
            if "metadata" not in roles and len(work) == 1 and isinstance(work[0].get("path"), str):
                metadata_path = f"{work[0]['path'].rstrip('/')}/{LEGACY_METADATA_SUBDIR}"
                data = {**data, "dirs": [*dirs, {"role": "metadata", "path": metadata_path}]}
        return data

    @model_validator(mode="after")
    def _dirs(self) -> JobSpec:
        for role in (*REQUIRED_ROLES, *SINGLE_ROLES):
            count = sum(d.role is role for d in self.dirs)
            if count > 1 or (count == 0 and role in REQUIRED_ROLES):
                wanted = "exactly" if role in REQUIRED_ROLES else "at most"
                raise ValueError(f"dirs: need {wanted} one {role.value} dir, found {count}")
        seen: dict[str, DirSpec] = {}
        for d in self.dirs:
            if d.path in seen:
                raise ValueError(f"dirs: {seen[d.path].role.value} and {d.role.value} have the same path {d.path}")
            seen[d.path] = d
        mounts = [d.mount_at or d.path for d in self.dirs]
        if len(set(mounts)) != len(mounts):
            raise ValueError("dirs: two dirs are mounted at the same container path")
        urls = [self.url_of(d) for d in self.dirs]
        if len(set(urls)) != len(urls):
            raise ValueError("dirs: two dirs map to the same storage URL; give them distinct paths or urls")
        for child in self.dirs:
            parent = self.parent_of(child)
            if parent and not parent.effective_direction.covers(child.effective_direction):
                raise ValueError(
                    f"dirs: {child.role.value} {child.path} ({child.effective_direction.value}) is nested in "
                    f"{parent.role.value} {parent.path} ({parent.effective_direction.value}), whose direction does not cover it"
                )
        return self

    # ---- derived values -------------------------------------------------------------------
    def url_of(self, d: DirSpec) -> str:
        return d.url or dir_url(self.storage_root, d.path)

    def dir(self, role: Role) -> DirSpec:
        return next(d for d in self.dirs if d.role is role)

    def parent_of(self, child: DirSpec) -> DirSpec | None:
        """The innermost other dir containing ``child`` (docs/design.md §3)."""
        best = None
        for d in self.dirs:
            if d is not child and _is_within(child.path, d.path):
                if best is None or len(d.path) > len(best.path):
                    best = d
        return best

    def nested_in(self, parent: DirSpec) -> list[DirSpec]:
        """Dirs whose innermost container is ``parent``; its sync skips them."""
        return [d for d in self.dirs if self.parent_of(d) is parent]

    def host_path(self, container_path: str) -> str | None:
        """The path on this side of a container path (``mount_at``), or None when no dir holds it."""
        best = None
        for d in self.dirs:
            mount = d.mount_at or d.path
            if container_path == mount or _is_within(container_path, mount):
                if best is None or len(mount) > len(best[0]):
                    best = (mount, d.path)
        return None if best is None else best[1] + container_path[len(best[0]):]

    @property
    def metadata_dir(self) -> str:
        return self.dir(Role.METADATA).path

    @property
    def workdir(self) -> str:
        return self.dir(Role.WORKDIR).path

    @property
    def executable_path(self) -> str:
        return self.executable or f"{self.metadata_dir}/exec.sh"

    @property
    def metadata_url(self) -> str:
        return self.url_of(self.dir(Role.METADATA))

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)


def _is_within(path: str, parent: str) -> bool:
    return parent == "/" or path.startswith(parent.rstrip("/") + "/")


class SpecTooNew(BadInput):
    """A spec in a format newer than this gpstage reads (written by a newer launcher than the entry).
    ``readable``: the spec read as this gpstage's format when that still works, so an entry can record
    its refusal where the job's launcher looks; None when it does not."""

    def __init__(self, source: str, version: int, data: dict[str, Any]) -> None:
        from gpstage import __version__

        super().__init__(f"{source}: spec_version {version} is newer than this gpstage ({__version__}) reads "
                         f"(spec_version {SPEC_VERSION})",
                         "update gpstage where the job runs (rebuild the entry bundle or the image), or submit "
                         "from the gpstage that matches it")
        try:
            self.readable: JobSpec | None = JobSpec.model_validate({**data, "spec_version": SPEC_VERSION})
        except ValidationError:
            self.readable = None


def parse_spec(text: str, source: str = "job spec") -> JobSpec:
    """Parse JSON or YAML text into a :class:`JobSpec`; every problem is a one-line :class:`BadInput`."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as json_err:
        try:
            import yaml

            data = yaml.safe_load(text)
        except Exception as yaml_err:  # noqa: BLE001 - any parse failure is the user's input
            raise BadInput(f"{source}: neither JSON ({json_err}) nor YAML ({str(yaml_err).splitlines()[0]})",
                           "fix the syntax; `gpstage spec schema` prints the expected shape") from None
    if not isinstance(data, dict):
        raise BadInput(f"{source}: expected a mapping of fields, got {type(data).__name__}", "see `gpstage spec schema`")
    version = data.get("spec_version", SPEC_VERSION)
    if isinstance(version, int) and not isinstance(version, bool) and version > SPEC_VERSION:
        raise SpecTooNew(source, version, data)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise BadInput(format_validation_error(err, source), "see `gpstage spec schema` for every field") from None


def load_spec(path: str | os.PathLike[str]) -> JobSpec:
    """Read a spec file (JSON or YAML) from a local path."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"job spec {p} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read job spec {p}: {err}", "check the file") from None
    return parse_spec(text, source=f"job spec {p}")


def spec_schema() -> dict[str, Any]:
    return JobSpec.model_json_schema()

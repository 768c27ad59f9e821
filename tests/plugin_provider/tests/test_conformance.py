"""The plugin proves conformance the way every provider does: by subclassing gpstage's class."""

import uuid

import fsspec
import pytest

from gpstage.testing.storage import RemoteTreeConformance, StorageConformance


class TestMemtest(StorageConformance, RemoteTreeConformance):
    @pytest.fixture
    def storage_url(self):
        root = f"/conformance/{uuid.uuid4().hex}"
        yield f"memtest:/{root}/job dir"  # a fresh, empty location
        memory = fsspec.filesystem("memory")
        if memory.exists(root):
            memory.rm(root, recursive=True)  # the store lives as long as the process

    @pytest.fixture
    def plant_unsafe(self):
        def plant(url):  # an object whose key climbs out of the tree with '..'
            fsspec.filesystem("memory").pipe_file("/" + url.split("://", 1)[1] + "/sub/../../escape.txt", b"x")

        return plant

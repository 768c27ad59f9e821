"""gpstage's own test run walks into this directory too. These tests belong to the plugin package: they
need it installed (its entry point visible), which gpstage's suite does in a temporary directory before
running them in a subprocess (tests/test_storage_conformance.py::TestPluginProvider). Without the
package installed in this interpreter there is nothing to collect here."""

from importlib.metadata import entry_points

if not any(ep.name == "memtest" for ep in entry_points(group="gpstage.storage")):
    collect_ignore_glob = ["tests/*"]

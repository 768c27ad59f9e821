"""Test kits for gpstage and its plugins: conformance classes a plugin's own test suite subclasses."""

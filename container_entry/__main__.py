"""``python -m container_entry``: gpstage-entry (the entry bundle's launch script runs it this way)."""

from container_entry.cli import main

main()

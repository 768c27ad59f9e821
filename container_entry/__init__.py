"""The container entry (``gpstage-entry``): runs ONE job where its module runs.

It owns the job's lifecycle on the node — pull the dirs to their identical paths, pre-run script
and hooks, run ``exec.sh`` through a runner (:mod:`container_entry.runners`), record the exit code
and ``status.json`` in the metadata dir, push outputs and logs back — and GenePattern's
runS3OnBatch.sh argument contract (:mod:`container_entry.legacy`). It imports ``gpstage`` for
storage and records, never ``launchers``: where the entry itself runs is not its business.
"""

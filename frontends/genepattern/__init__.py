"""The GenePattern server front end: drop-in replacements for the job-runner scripts its AWS Batch
executor calls (submit, status, sync, cancel, post-delete) and for its local executor's
``run-with-docker.sh`` — backed by any gpstage launcher and any storage (docs/genepattern-server.md).

``jobspec`` turns the server's submit call into a job spec and exec.sh; ``calls`` runs each call on a
launcher; ``docker_run`` is run-with-docker.sh; ``install`` writes the scripts; ``cli`` is the command
line they run (``gpstage-genepattern``).
"""

"""Lay out the sample module as a job under ``demo/`` with file storage and print the spec's path.

Used by ``scripts/demo.sh`` (the README's first command), which then runs ``gpstage run SPEC``: the
local launcher stages the dirs to ``demo/storage``, runs the entry (process runner), collects.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.sample_job import lay_out_job  # noqa: E402


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "demo").absolute()
    shutil.rmtree(root, ignore_errors=True)  # a fresh demo every time
    spec = lay_out_job(root / "server", f"file://{root}/storage", job_id="gpstage-demo")
    path = root / "job.json"
    path.write_text(spec.to_json())
    print(path)


if __name__ == "__main__":
    main()

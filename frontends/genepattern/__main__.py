"""``python -m frontends.genepattern``: what the installed job-runner scripts run."""

import sys

from frontends.genepattern.cli import main

sys.exit(main())

"""Front ends: the top floor, for programs that drive gpstage's launchers on someone else's terms.

Each front end translates an outside contract into gpstage jobs and back — GenePattern's server
(its job-runner scripts, which it shells out to and whose stdout it parses) and workflow engines
(the GA4GH Task Execution Service API). They may import every layer below (``launchers``,
``container_entry.api``, ``gpstage``); nothing below imports them (import-linter's layers contract in
pyproject.toml). The notebook API is not here: it is the launchers' own Python face
(:mod:`launchers.api`). See docs/design.md, "Layers".
"""

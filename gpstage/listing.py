"""Listing one URL as gpstage sees it: reserved names hidden, manifest metadata applied."""

from __future__ import annotations

from gpstage.aio import run_sync
from gpstage.report import TransferReport
from gpstage.storage import open_tree
from gpstage.storage.tree import Tree


async def async_list_url(url: str) -> Tree:
    async with open_tree(url, TransferReport(url, "")) as tree:
        return await tree.scan()


def list_url(url: str) -> Tree:
    return run_sync(async_list_url(url))

"""Listing one URL as gpstage sees it: reserved names hidden, manifest metadata applied."""

from __future__ import annotations

import asyncio

from gpstage.aio import run_sync
from gpstage.report import TransferReport
from gpstage.storage import LocalTree, open_tree
from gpstage.storage.tree import Tree


async def async_list_url(url: str) -> Tree:
    async with open_tree(url, TransferReport(url, "")) as tree:
        return await asyncio.to_thread(tree.list) if isinstance(tree, LocalTree) else await tree.list()


def list_url(url: str) -> Tree:
    return run_sync(async_list_url(url))

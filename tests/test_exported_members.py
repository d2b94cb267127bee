"""The public surface is exactly what __all__ says (as httpx checks its own)."""

from __future__ import annotations

import exchange


def test_all_exports_exist_and_nothing_else_is_public() -> None:
    public = {name for name in dir(exchange) if not name.startswith("_")}
    modules = {"core", "errors", "records", "v1", "store", "config", "node", "pki", "client", "cli", "demo", "sync",
               "logs", "observe", "drafts", "render", "stix", "console", "runtime"}
    assert set(exchange.__all__) == public - modules
    for name in exchange.__all__:
        assert getattr(exchange, name) is not None

"""The `vibeops` command against the session's real Prefect API."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.orchestration import get_client

import blocks
from vibeops_cli import setup_blocks


def test_setup_blocks_registers_every_block_type_and_saves_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIBEOPS_HOME", str(tmp_path))
    setup_blocks()  # `vibeops setup-blocks`, also the first step of `vibeops up`
    assert "saved `local-mysql`, `local-two-regions`, `local-retention-policy`" in (
        capsys.readouterr().out
    )
    with get_client(sync_client=True) as client:
        for name in blocks.__all__:
            slug = getattr(blocks, name).get_block_type_slug()
            assert client.read_block_type_by_slug(slug).slug == slug
    store = blocks.BackupStore.load("local-two-regions")
    assert [d.region for d in store.destinations] == ["local-a", "local-b"]
    assert all(Path(d.path).is_relative_to(tmp_path) for d in store.destinations)  # type: ignore[union-attr]
    assert blocks.MySQLConnection.load("local-mysql").host == "127.0.0.1"

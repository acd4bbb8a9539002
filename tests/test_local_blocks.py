"""`vibeops up` saves the embedded defaults as blocks the UI shows and edits."""

from __future__ import annotations


def test_the_local_blocks_include_the_seed_retention_policy() -> None:
    from blocks import RetentionPolicy
    from blocks.defaults import save_local_blocks
    from tasks.retention import seed_rules

    assert "local-retention-policy" in save_local_blocks()
    policy = RetentionPolicy.load("local-retention-policy")
    assert [r.name for r in policy.rules] == [r.name for r in seed_rules()]

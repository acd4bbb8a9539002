"""InfluxDB fidelity: the hostile line protocol corpus (tests/corpus/influxdb) through the real
backup and drill flows, against the InfluxDB 2 stand-in driven by influxdb-client. Every value
must come back with its type (1i, 1u and 1.0 differ) and its nanosecond time, and the drill
must notice when one value changes its type."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from prefect import flow

from blocks import BackupStore, InfluxConnection
from flows.backup_influxdb import BackupInfluxParams, backup_influxdb
from flows.forms import params_of
from flows.restore_drill_influxdb import RestoreDrillInfluxParams, restore_drill_influxdb
from tasks.errors import BackupVerificationError, DrillFailed
from tasks.influx import (
    EARLIEST_NS,
    LATEST_NS,
    format_line,
    format_value,
    split_line_protocol,
)
from tasks.influx_backup import restore_influx_copy
from tasks.manifest import BackupManifest
from tasks.storage import open_store
from tests.fixtures.docstore_corpus import influx_corpus_files, rewrite_stored_copy
from tests.helpers import local_store, run_texts, save_block
from tests.influx_standin import InfluxStandIn

REGIONS = ("local-a", "local-b")


def _conn(server: InfluxStandIn) -> InfluxConnection:
    return InfluxConnection(url=server.url, org=server.org, token=server.token, timeout_seconds=5)


def write_bucket(server: InfluxStandIn, body: str) -> str:
    """A new bucket holding `body` (line protocol, ns), written by the real client."""
    name = f"fid_{uuid.uuid4().hex[:8]}"
    with _conn(server).get_client() as client:
        client.buckets_api().create_bucket(bucket_name=name, org=server.org)
        client.write_api(write_options=SYNCHRONOUS).write(
            name, server.org, body, write_precision=WritePrecision.NS
        )
    return name


@pytest.fixture
def corpus_bucket(influx_server: InfluxStandIn) -> Iterator[str]:
    yield write_bucket(influx_server, "\n".join(p.read_text() for p in influx_corpus_files()))


def typed_series(server: InfluxStandIn, bucket: str) -> dict[Any, list[tuple[int, str, str]]]:
    """Every series of `bucket` with (time, value type, repr) per value: 1 == 1.0 == UInt(1) in
    Python, their types and reprs are not."""
    with server.lock:
        found = server.bucket_by_name(bucket)
        assert found is not None
        return {
            key: sorted((t, type(v).__name__, repr(v)) for t, v in values.items())
            for key, values in server.series[found["id"]].items()
        }


def backup(server: InfluxStandIn, bucket: str, store: BackupStore) -> BackupManifest:
    params = BackupInfluxParams(
        source=bucket.replace("_", "-"),
        bucket=bucket,
        connection_block=save_block(_conn(server)),
        store_block=save_block(store),
    )
    manifest: BackupManifest = backup_influxdb(**params_of(params))
    return manifest


def restore_into(server: InfluxStandIn, manifest: BackupManifest, store: BackupStore) -> str:
    scratch = f"drill_fid_{uuid.uuid4().hex[:8]}"
    copy = open_store(store.destinations[0])
    conn = _conn(server)

    @flow(name="restore-influxdb-fidelity-test")
    def restore_one() -> Any:
        return restore_influx_copy(conn, manifest, copy, scratch, 3)

    restore_one()
    return scratch


def drill(server: InfluxStandIn, manifest: BackupManifest, store: BackupStore) -> Any:
    return restore_drill_influxdb(
        **params_of(
            RestoreDrillInfluxParams(
                source=manifest.source,
                store_block=save_block(store),
                connection_block=save_block(_conn(server)),
            )
        ),
        return_state=True,
    )


def test_corpus_restores_every_value_with_its_type_and_nanosecond_time(
    influx_server: InfluxStandIn, corpus_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path, REGIONS)
    manifest = backup(influx_server, corpus_bucket, store)
    assert manifest.total_rows == influx_server.points(corpus_bucket) == 55
    scratch = restore_into(influx_server, manifest, store)
    assert typed_series(influx_server, scratch) == typed_series(influx_server, corpus_bucket)

    state = drill(influx_server, manifest, store)
    assert state.is_completed(), state
    assert state.result().passed


def test_points_before_1970_and_after_the_backup_started_are_backed_up(
    influx_server: InfluxStandIn, tmp_path: Path
) -> None:
    """InfluxDB keeps times from 1677 to 2262; a backup that starts at the epoch and stops at
    its own start loses the rest without a word."""
    bucket = write_bucket(
        influx_server,
        "m v=1i -9223372036854775806\nm v=2i -1\nm v=3i 1\nm v=4i 4102444800000000000",
    )
    store = local_store(tmp_path, REGIONS)
    manifest = backup(influx_server, bucket, store)
    assert manifest.total_rows == 4
    scratch = restore_into(influx_server, manifest, store)
    assert typed_series(influx_server, scratch) == typed_series(influx_server, bucket)


def test_values_in_the_last_microsecond_of_time_are_refused_before_anything_is_written(
    influx_server: InfluxStandIn, tmp_path: Path
) -> None:
    bucket = write_bucket(influx_server, "m v=1i 1\nm v=2i 9223372036854775806")
    with pytest.raises(BackupVerificationError, match=rf"{bucket}.* 1 value\(s\) in the last"):
        backup(influx_server, bucket, local_store(tmp_path, REGIONS))
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_string_values_holding_newlines_restore(
    influx_server: InfluxStandIn, tmp_path: Path
) -> None:
    bucket = write_bucket(
        influx_server, 'log msg="line one\nline two\n\nfour",n=1i 1700000000000000001'
    )
    store = local_store(tmp_path, REGIONS)
    manifest = backup(influx_server, bucket, store)
    scratch = restore_into(influx_server, manifest, store)
    assert typed_series(influx_server, scratch) == typed_series(influx_server, bucket)


def test_a_single_value_of_another_type_is_refused_on_load_and_fails_the_drill(
    influx_server: InfluxStandIn, corpus_bucket: str, tmp_path: Path
) -> None:
    store = local_store(tmp_path, REGIONS)
    manifest = backup(influx_server, corpus_bucket, store)
    rewrite_export(tmp_path, manifest, lambda text: text.replace("count=1i ", "count=1u ", 1))
    state = drill(influx_server, manifest, store)
    assert state.is_failed()
    with pytest.raises(DrillFailed, match=r"no region's copy could be restored"):
        state.result()
    # the run's logs and report reach the API asynchronously: wait for them (30 s at most)
    deadline = time.monotonic() + 30
    while "partial write: field type conflict" not in run_texts(state.state_details.flow_run_id):
        assert time.monotonic() < deadline, "the drill's report does not carry the server's error"
        time.sleep(0.5)


def test_split_line_protocol_keeps_newlines_inside_string_values() -> None:
    data = b'm s="a\nb",t="x\\"\n" 1\nm,tag=a\\ "b f=1i 2\nm s="open\n'
    lines, rest = split_line_protocol(data)
    assert lines == [b'm s="a\nb",t="x\\"\n" 1', b'm,tag=a\\ "b f=1i 2']
    assert rest == b'm s="open\n'


NAMES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    min_size=1,
    max_size=12,
)


@given(
    st.lists(
        st.tuples(
            NAMES.filter(lambda n: not n.endswith("\\")),
            st.lists(st.tuples(NAMES, NAMES).filter(lambda kv: not kv[1].endswith("\\"))),
            NAMES.filter(lambda n: not n.endswith("\\") and "\\" not in n),
            st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
            st.integers(min_value=EARLIEST_NS, max_value=LATEST_NS),
        ),
        max_size=8,
    ),
    st.integers(min_value=1, max_value=64),
)
@settings(max_examples=300, deadline=None)
def test_exported_lines_split_back_exactly_however_the_stream_is_chunked(
    points: list[tuple[str, list[tuple[str, str]], str, str, int]], chunk: int
) -> None:
    """Lines as the export formats them (strings with quotes, backslashes and newlines) come
    back one for one from the restore's splitter, whatever the chunk boundaries."""
    lines = [
        format_line(m, tags, f, format_value(text, "string"), ns) for m, tags, f, text, ns in points
    ]
    data = "".join(f"{line}\n" for line in lines).encode()
    found: list[bytes] = []
    pending = b""
    for offset in range(0, len(data), chunk):
        complete, pending = split_line_protocol(pending + data[offset : offset + chunk])
        found += complete
    assert pending == b""
    assert [line.decode() for line in found] == lines


def rewrite_export(root: Path, manifest: BackupManifest, edit: Callable[[str], str]) -> None:
    """Edit the exported line protocol in every region and re-sign it."""
    rewrite_stored_copy(root, REGIONS, manifest, lambda plain: edit(plain.decode()).encode())


# (pattern, replacement) over the whole export: InfluxDB holds one type per field, so a type
# change is made to every value of the field (a single one is refused on load, see below).
TAMPERS = {
    "integers become unsigned": (r"count=(\d+)i ", r"count=\1u "),
    "integers become floats": (r"count=(\d+)i ", r"count=\1.0 "),
    "-0.0 becomes 0.0": (r"usage=-0\.0 ", "usage=0.0 "),
    "a point a nanosecond earlier": (r" 1700000000123456789\n", " 1700000000123456788\n"),
}


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_drill_fails_when_one_value_changes_its_type_or_time(
    influx_server: InfluxStandIn, corpus_bucket: str, tmp_path: Path, tamper: str
) -> None:
    old, new = TAMPERS[tamper]
    store = local_store(tmp_path, REGIONS)
    manifest = backup(influx_server, corpus_bucket, store)
    rewrite_export(tmp_path, manifest, lambda text: re.sub(old, new, text))
    state = drill(influx_server, manifest, store)
    assert state.is_failed()
    with pytest.raises(DrillFailed, match=r"measurement '[^']+': sha256 .* differs"):
        state.result()

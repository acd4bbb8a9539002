"""A small in-memory MongoDB that speaks the wire protocol (OP_QUERY handshake, OP_MSG).

The real pymongo client talks to it over TCP. Documents are kept as the raw BSON the client
sent, so what a client reads back is byte-identical to what it wrote. Users authenticate
with SCRAM-SHA-256; once a user exists, every data command needs an authenticated connection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import socket
import socketserver
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any

import bson
from bson import SON, Int64, ObjectId
from bson.binary import Binary
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.datetime_ms import DatetimeMS
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.raw_bson import RawBSONDocument
from bson.regex import Regex
from bson.timestamp import Timestamp

from tests.mongo_standin.scram import Credential, ScramConversation

OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
# A server stores any int64 as a date (years before 1 and after 9999 included): decode those
# as DatetimeMS instead of refusing the document.
DECODE = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)
MAX_WIRE_VERSION = 17
BATCH_BYTES = 4 << 20
NO_AUTH_COMMANDS = frozenset(
    {"hello", "ismaster", "ping", "buildinfo", "saslstart", "saslcontinue", "endsessions"}
)


class CommandError(Exception):
    """Answered as a MongoDB error document: {ok: 0, errmsg, code, codeName}."""

    def __init__(self, code: int, code_name: str, message: str) -> None:
        super().__init__(message)
        self.code, self.code_name = code, code_name

    def document(self) -> dict[str, Any]:
        return {"ok": 0.0, "errmsg": str(self), "code": self.code, "codeName": self.code_name}


def _unauthorized(command: str) -> CommandError:
    return CommandError(13, "Unauthorized", f"command {command} requires authentication")


# -- matching and ordering -----------------------------------------------------------------------


def _bracket(value: Any) -> tuple[int, Any]:
    """A sort key following MongoDB's type order (MinKey < null < numbers < strings < objects <
    arrays < binary < ObjectId < booleans < dates < timestamps < regexes < MaxKey)."""
    if isinstance(value, MinKey):
        return (0, 0)
    if isinstance(value, MaxKey):
        return (13, 0)
    if isinstance(value, DatetimeMS):
        return (9, int(value))
    if isinstance(value, Timestamp):
        return (10, (value.time, value.inc))
    if isinstance(value, Regex):
        return (11, (value.pattern, value.flags))
    if value is None:
        return (1, 0)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, int | float) or type(value).__name__ == "Decimal128":
        return (2, float(str(value)) if not isinstance(value, int | float) else value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, dict):
        return (4, sorted(value.items()).__repr__())
    if isinstance(value, list):
        return (5, repr(value))
    if isinstance(value, bytes | Binary):
        return (6, bytes(value))
    if isinstance(value, ObjectId):
        return (7, value.binary)
    if isinstance(value, dt.datetime):
        return (9, int(DatetimeMS(value.replace(tzinfo=value.tzinfo or dt.UTC))))
    return (12, repr(value))


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
}


def _field_matches(value: Any, present: bool, condition: Any) -> bool:
    is_operator = (
        isinstance(condition, dict) and condition and next(iter(condition)).startswith("$")
    )
    if not is_operator:
        return present and _bracket(value) == _bracket(condition)
    for op, operand in condition.items():
        if op in _COMPARE:
            if not present:
                return False
            left, right = _bracket(value), _bracket(operand)
            if left[0] != right[0] or not _COMPARE[op](left[1], right[1]):
                return False
        elif op == "$eq":
            if not _field_matches(value, present, operand):
                return False
        elif op == "$ne":
            if _field_matches(value, present, operand):
                return False
        elif op == "$in":
            if not any(_field_matches(value, present, item) for item in operand):
                return False
        elif op == "$exists":
            if present != bool(operand):
                return False
        else:
            raise CommandError(2, "BadValue", f"unknown operator: {op}")
    return True


def matches(document: dict[str, Any], query: dict[str, Any]) -> bool:
    """Top-level equality and $lt/$lte/$gt/$gte/$in/$ne/$eq/$exists, plus $and/$or."""
    for key, condition in query.items():
        if key == "$and":
            if not all(matches(document, sub) for sub in condition):
                return False
        elif key == "$or":
            if not any(matches(document, sub) for sub in condition):
                return False
        elif not _field_matches(document.get(key), key in document, condition):
            return False
    return True


class Stored:
    """One document: the raw bytes as sent and their decoded form (for filters and sorts)."""

    __slots__ = ("decoded", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = RawBSONDocument(raw)
        self.decoded: dict[str, Any] = bson.decode(raw, DECODE)


def _id_key(value: Any) -> bytes:
    return bson.encode({"": value})


def _sorted(docs: Iterable[Stored], sort: dict[str, int] | None) -> list[Stored]:
    result = list(docs)
    for field, direction in reversed(list((sort or {}).items())):
        result.sort(key=lambda d, f=field: _bracket(d.decoded.get(f)), reverse=direction < 0)
    return result


def _project(doc: Stored, projection: dict[str, Any] | None) -> RawBSONDocument:
    if not projection:
        return doc.raw
    include = {k for k, v in projection.items() if v and k != "_id"}
    keep_id = projection.get("_id", 1)
    if include:
        fields = {k: v for k, v in doc.decoded.items() if k in include or (k == "_id" and keep_id)}
    else:
        fields = {k: v for k, v in doc.decoded.items() if k not in projection or projection[k]}
        if not keep_id:
            fields.pop("_id", None)
    return RawBSONDocument(bson.encode(fields))


# -- the server state ----------------------------------------------------------------------------


class Collection:
    def __init__(self) -> None:
        self.docs: dict[bytes, Stored] = {}
        self.indexes: list[dict[str, Any]] = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]


class MongoState:
    """Databases, users and open cursors, behind one lock."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.databases: dict[str, dict[str, Collection]] = {}
        self.users: dict[tuple[str, str], tuple[Credential, list[Any]]] = {}
        self.cursors: dict[int, tuple[str, list[RawBSONDocument]]] = {}
        self.cursor_ids = itertools.count(1000)

    def collection(self, db: str, name: str, create: bool = False) -> Collection | None:
        if create:
            return self.databases.setdefault(db, {}).setdefault(name, Collection())
        return self.databases.get(db, {}).get(name)

    def add_user(self, db: str, user: str, password: str, roles: list[Any] | None = None) -> None:
        self.users[(db, user)] = (Credential.from_password(password), list(roles or []))

    def cursor_reply(
        self, ns: str, docs: list[RawBSONDocument], batch_size: int | None, first: bool
    ) -> dict[str, Any]:
        limit = batch_size if batch_size else (101 if first else len(docs))
        batch: list[RawBSONDocument] = []
        size = 0
        for doc in docs:
            if len(batch) >= limit or (batch and size + len(doc.raw) > BATCH_BYTES):
                break
            batch.append(doc)
            size += len(doc.raw)
        rest = docs[len(batch) :]
        cursor_id = 0
        if rest:
            cursor_id = next(self.cursor_ids)
            self.cursors[cursor_id] = (ns, rest)
        key = "firstBatch" if first else "nextBatch"
        return {"cursor": {key: batch, "id": Int64(cursor_id), "ns": ns}, "ok": 1.0}


class Session:
    """Per-connection state: the authenticated user and a SCRAM conversation in progress."""

    def __init__(self) -> None:
        self.user: tuple[str, str] | None = None
        self.scram: tuple[str, ScramConversation] | None = None


# -- commands ------------------------------------------------------------------------------------


def _hello(state: MongoState, body: dict[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {
        "helloOk": True,
        "ismaster": True,
        "isWritablePrimary": True,
        "maxBsonObjectSize": 16 * 1024 * 1024,
        "maxMessageSizeBytes": 48_000_000,
        "maxWriteBatchSize": 100_000,
        "localTime": dt.datetime.now(dt.UTC),
        "logicalSessionTimeoutMinutes": 30,
        "connectionId": 1,
        "minWireVersion": 0,
        "maxWireVersion": MAX_WIRE_VERSION,
        "readOnly": False,
        "ok": 1.0,
    }
    mechs = body.get("saslSupportedMechs")
    if isinstance(mechs, str) and tuple(mechs.split(".", 1)) in state.users:
        reply["saslSupportedMechs"] = ["SCRAM-SHA-256"]
    return reply


def _sasl(state: MongoState, session: Session, db: str, body: dict[str, Any]) -> dict[str, Any]:
    failed = CommandError(18, "AuthenticationFailed", "Authentication failed.")
    if "saslStart" in body:
        if body.get("mechanism") != "SCRAM-SHA-256":
            raise CommandError(
                334, "MechanismUnavailable", f"Unsupported mechanism {body.get('mechanism')}"
            )

        def lookup(user: str) -> Credential | None:
            entry = state.users.get((db, user))
            return entry[0] if entry else None

        conversation = ScramConversation(bytes(body["payload"]), lookup)
        session.scram = (db, conversation)
        payload = conversation.server_first
        return {"conversationId": 1, "done": False, "payload": Binary(payload), "ok": 1.0}
    if session.scram is None:
        raise failed
    db, conversation = session.scram
    session.scram = None
    final = conversation.finish(bytes(body["payload"]))
    if final is None:
        raise failed
    session.user = (db, conversation.user)
    return {"conversationId": 1, "done": True, "payload": Binary(final), "ok": 1.0}


def _aggregate(docs: list[Stored], pipeline: list[dict[str, Any]]) -> list[RawBSONDocument]:
    current: list[Any] = docs
    for stage in pipeline:
        (name, spec), *_ = stage.items()
        if name == "$match":
            current = [d for d in current if matches(_decoded(d), spec)]
        elif name == "$sort":
            current = _sorted([_as_stored(d) for d in current], spec)
        elif name == "$skip":
            current = current[spec:]
        elif name == "$limit":
            current = current[:spec]
        elif name == "$count":
            current = [{spec: len(current)}] if current else []
        elif name == "$group" and spec.get("_id") is not None and len(spec) == 2:
            field, accumulator = next((k, v) for k, v in spec.items() if k != "_id")
            if accumulator != {"$sum": 1}:
                raise CommandError(40324, "Location40324", f"unsupported accumulator {accumulator}")
            current = [{"_id": spec["_id"], field: len(current)}] if current else []
        else:
            raise CommandError(40324, "Location40324", f"Unrecognized pipeline stage {name}")
    return [d.raw if isinstance(d, Stored) else RawBSONDocument(bson.encode(d)) for d in current]


def _decoded(doc: Any) -> dict[str, Any]:
    return doc.decoded if isinstance(doc, Stored) else doc


def _as_stored(doc: Any) -> Stored:
    return doc if isinstance(doc, Stored) else Stored(bson.encode(doc))


def _insert(coll: Collection, documents: list[bytes]) -> dict[str, Any]:
    errors = []
    inserted = 0
    for index, raw in enumerate(documents):
        stored = Stored(raw)
        if "_id" not in stored.decoded:
            stored = Stored(bson.encode(SON([("_id", ObjectId()), *stored.decoded.items()])))
        key = _id_key(stored.decoded["_id"])
        if key in coll.docs:
            errors.append(
                {
                    "index": index,
                    "code": 11000,
                    "errmsg": f"E11000 duplicate key error dup key: {{ _id: {stored.decoded['_id']!r} }}",
                }
            )
            break
        coll.docs[key] = stored
        inserted += 1
    reply: dict[str, Any] = {"n": inserted, "ok": 1.0}
    if errors:
        reply["writeErrors"] = errors
    return reply


def _delete(coll: Collection | None, deletes: list[dict[str, Any]]) -> dict[str, Any]:
    removed = 0
    for spec in deletes:
        if coll is None:
            continue
        victims = [k for k, d in coll.docs.items() if matches(d.decoded, spec.get("q", {}))]
        if spec.get("limit") == 1:
            victims = victims[:1]
        for key in victims:
            del coll.docs[key]
        removed += len(victims)
    return {"n": removed, "ok": 1.0}


def _require_namespace(coll: Collection | None, db: str, name: str) -> Collection:
    if coll is None:
        raise CommandError(26, "NamespaceNotFound", f"ns does not exist: {db}.{name}")
    return coll


def _users_command(state: MongoState, name: str, db: str, body: dict[str, Any]) -> dict[str, Any]:
    if name == "createuser":
        user = body["createUser"]
        if (db, user) in state.users:
            raise CommandError(51003, "Location51003", f'User "{user}@{db}" already exists')
        state.add_user(db, user, body["pwd"], body.get("roles", []))
        return {"ok": 1.0}
    if name == "dropuser":
        if state.users.pop((db, body["dropUser"]), None) is None:
            raise CommandError(11, "UserNotFound", f"User '{body['dropUser']}@{db}' not found")
        return {"ok": 1.0}
    wanted = body["usersInfo"]
    users = [
        {"_id": f"{d}.{u}", "user": u, "db": d, "roles": roles, "mechanisms": ["SCRAM-SHA-256"]}
        for (d, u), (_cred, roles) in sorted(state.users.items())
        if d == db and (wanted in (1, 1.0) or wanted == u)
    ]
    return {"users": users, "ok": 1.0}


def run_command(
    state: MongoState, session: Session, body: dict[str, Any], documents: dict[str, list[bytes]]
) -> dict[str, Any]:
    """Execute one command document; raise CommandError for MongoDB-style failures."""
    command = next(iter(body))
    name = command.lower()
    db = body.get("$db", "admin")
    if name in ("hello", "ismaster"):
        return _hello(state, body)
    if name in ("saslstart", "saslcontinue"):
        return _sasl(state, session, db, body)
    if state.users and session.user is None and name not in NO_AUTH_COMMANDS:
        raise _unauthorized(command)
    value = body[command]
    with state.lock:
        if name in ("ping", "endsessions"):
            return {"ok": 1.0}
        if name == "buildinfo":
            return {"version": "7.0.0-standin", "versionArray": [7, 0, 0, 0], "ok": 1.0}
        if name in ("createuser", "dropuser", "usersinfo"):
            return _users_command(state, name, db, body)
        if name == "listdatabases":
            names = sorted(n for n, colls in state.databases.items() if colls)
            dbs = [{"name": n, "sizeOnDisk": 0, "empty": False} for n in names]
            return {"databases": dbs, "totalSize": 0, "ok": 1.0}
        if name == "dropdatabase":
            state.databases.pop(db, None)
            return {"dropped": db, "ok": 1.0}
        if name == "listcollections":
            wanted = (body.get("filter") or {}).get("name")
            names = sorted(state.databases.get(db, {}))
            infos = [
                RawBSONDocument(bson.encode({"name": n, "type": "collection", "options": {}}))
                for n in names
                if wanted is None or n == wanted
            ]
            return state.cursor_reply(f"{db}.$cmd.listCollections", infos, None, True)
        if name == "getmore":
            ns, rest = state.cursors.pop(int(value), (None, None))
            if ns is None or rest is None:
                raise CommandError(43, "CursorNotFound", f"cursor id {value} not found")
            batch = body.get("batchSize")
            reply = state.cursor_reply(ns, rest, batch, False)
            return reply
        if name == "killcursors":
            ids = list(body.get("cursors", []))
            for cursor_id in ids:
                state.cursors.pop(int(cursor_id), None)
            return {"cursorsKilled": ids, "cursorsNotFound": [], "cursorsAlive": [],
                    "cursorsUnknown": [], "ok": 1.0}  # fmt: skip
        coll = state.collection(db, value) if isinstance(value, str) else None
        ns = f"{db}.{value}"
        if name == "create":
            if coll is not None:
                raise CommandError(48, "NamespaceExists", f"Collection {ns} already exists.")
            state.collection(db, value, create=True)
            return {"ok": 1.0}
        if name == "drop":
            _require_namespace(coll, db, value)
            del state.databases[db][value]
            return {"ns": ns, "nIndexesWas": 1, "ok": 1.0}
        if name == "insert":
            target = state.collection(db, value, create=True)
            assert target is not None
            return _insert(target, documents.get("documents", []))
        if name == "delete":
            return _delete(coll, body.get("deletes", []) or _decode_all(documents, "deletes"))
        if name == "count":
            docs = coll.docs.values() if coll else []
            return {"n": sum(1 for d in docs if matches(d.decoded, body.get("query") or {})),
                    "ok": 1.0}  # fmt: skip
        if name == "find":
            docs = [d for d in (coll.docs.values() if coll else []) if
                    matches(d.decoded, body.get("filter") or {})]  # fmt: skip
            docs = _sorted(docs, body.get("sort"))[int(body.get("skip") or 0) :]
            if body.get("limit"):
                docs = docs[: abs(int(body["limit"]))]
            out = [_project(d, body.get("projection")) for d in docs]
            batch = body.get("batchSize")
            if body.get("singleBatch"):
                return {"cursor": {"firstBatch": out[: batch or None], "id": Int64(0), "ns": ns},
                        "ok": 1.0}  # fmt: skip
            return state.cursor_reply(ns, out, batch, True)
        if name == "aggregate":
            if not isinstance(value, str):
                raise CommandError(59, "CommandNotFound", "database aggregate is not supported")
            result = _aggregate(list(coll.docs.values()) if coll else [], body["pipeline"])
            return state.cursor_reply(ns, result, body.get("cursor", {}).get("batchSize"), True)
        if name == "createindexes":
            target = state.collection(db, value, create=True)
            assert target is not None
            before = len(target.indexes)
            known = {i["name"] for i in target.indexes}
            for spec in body.get("indexes", []) or _decode_all(documents, "indexes"):
                if spec["name"] not in known:
                    target.indexes.append({"v": 2, **spec})
            return {"numIndexesBefore": before, "numIndexesAfter": len(target.indexes),
                    "createdCollectionAutomatically": coll is None, "ok": 1.0}  # fmt: skip
        if name == "listindexes":
            found = _require_namespace(coll, db, value)
            specs = [RawBSONDocument(bson.encode(i)) for i in found.indexes]
            return state.cursor_reply(ns, specs, None, True)
    raise CommandError(59, "CommandNotFound", f"no such command: '{command}'")


def _decode_all(documents: dict[str, list[bytes]], name: str) -> list[dict[str, Any]]:
    return [bson.decode(raw, DECODE) for raw in documents.get(name, [])]


# -- framing -------------------------------------------------------------------------------------


def _cstring(data: bytes, offset: int) -> tuple[str, int]:
    end = data.index(b"\0", offset)
    return data[offset:end].decode(), end + 1


def _documents(data: bytes, offset: int, end: int) -> list[bytes]:
    docs = []
    while offset < end:
        (length,) = struct.unpack_from("<i", data, offset)
        docs.append(data[offset : offset + length])
        offset += length
    return docs


def parse_op_msg(data: bytes) -> tuple[int, dict[str, Any], dict[str, list[bytes]]]:
    """(flags, body document, kind-1 sequences as raw documents) of an OP_MSG body."""
    (flags,) = struct.unpack_from("<I", data, 0)
    end = len(data) - (4 if flags & 1 else 0)
    offset, body, sequences = 4, {}, {}
    while offset < end:
        kind = data[offset]
        offset += 1
        if kind == 0:
            (length,) = struct.unpack_from("<i", data, offset)
            body = bson.decode(data[offset : offset + length], DECODE)
            offset += length
        else:
            (length,) = struct.unpack_from("<i", data, offset)
            identifier, start = _cstring(data, offset + 4)
            sequences[identifier] = _documents(data, start, offset + length)
            offset += length
    return flags, body, sequences


class _Handler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def _read(self, size: int) -> bytes:
        chunks = bytearray()
        while len(chunks) < size:
            chunk = self.request.recv(size - len(chunks))
            if not chunk:
                raise ConnectionError("client closed")
            chunks += chunk
        return bytes(chunks)

    def handle(self) -> None:
        session = Session()
        state = self.server.state
        self.server.connections.add(self.request)
        try:
            while True:
                length, request_id, _, opcode = struct.unpack("<iiii", self._read(16))
                data = self._read(length - 16)
                if opcode == OP_QUERY:
                    _, name_end = _cstring(data, 4)
                    body = bson.decode(_documents(data, name_end + 8, len(data))[0], DECODE)
                    db = _cstring(data, 4)[0].split(".", 1)[0]
                    reply = self._answer(state, session, {**body, "$db": db}, {})
                    payload = struct.pack("<iqii", 0, 0, 0, 1) + bson.encode(reply)
                    out_op = OP_REPLY
                elif opcode == OP_MSG:
                    flags, body, sequences = parse_op_msg(data)
                    reply = self._answer(state, session, body, sequences)
                    if flags & 2:  # moreToCome: the client wants no answer
                        continue
                    payload = struct.pack("<I", 0) + b"\0" + bson.encode(reply)
                    out_op = OP_MSG
                else:
                    return
                header = struct.pack("<iiii", 16 + len(payload), 0, request_id, out_op)
                self.request.sendall(header + payload)
        except (ConnectionError, OSError):
            return
        finally:
            self.server.connections.discard(self.request)

    @staticmethod
    def _answer(
        state: MongoState, session: Session, body: dict[str, Any], seqs: dict[str, list[bytes]]
    ) -> dict[str, Any]:
        try:
            return run_command(state, session, body, seqs)
        except CommandError as exc:
            return exc.document()
        except (KeyError, TypeError, ValueError) as exc:
            return CommandError(2, "BadValue", f"{type(exc).__name__}: {exc}").document()


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: MongoState) -> None:
        self.state = state
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)


class MongoStandin:
    """Start with `MongoStandin(port).start()`; `stop()` closes every connection."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, port
        self.state = MongoState()
        self._server: _TCPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> MongoStandin:
        self._server = _TCPServer((self.host, self.port), self.state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mongo-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        for conn in list(self._server.connections):
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None

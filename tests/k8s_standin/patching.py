"""Patch flavours (strategic merge, JSON merge, JSON patch) and label/field selectors.

Strategic merge is approximated the way the typed Kubernetes clients use it: maps merge
recursively, `null` deletes a key, and lists whose items carry a known merge key
(containers by `name`, ports by `containerPort`/`port`, conditions by `type`, ...) merge
item by item; other lists are replaced. `$patch: replace|delete` and `$retainKeys` /
`$setElementOrder` directives are honoured or ignored as the API server would for our use.
"""

from __future__ import annotations

import copy
import re
from typing import Any


class PatchError(Exception):
    """A patch body could not be applied (answered 422, or 400 for a malformed body)."""


# Field name -> merge key, from the Kubernetes OpenAPI `x-kubernetes-patch-merge-key`s we meet.
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "volumes": ("name",),
    "env": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "ports": ("containerPort", "port"),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "ownerReferences": ("uid",),
    "resourceClaims": ("name",),
}


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _merge_key(field: str, items: list[Any]) -> str | None:
    for candidate in MERGE_KEYS.get(field, ()):
        if items and all(isinstance(i, dict) and candidate in i for i in items):
            return candidate
    return None


def strategic_merge(original: Any, patch: Any, field: str = "") -> Any:
    """Apply a strategic-merge patch to `original` and return the result (inputs untouched)."""
    if isinstance(patch, dict) and isinstance(original, dict):
        if patch.get("$patch") == "replace":
            return _strip_directives(patch)
        result = copy.deepcopy(original)
        for key, value in patch.items():
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
            elif key in result:
                result[key] = strategic_merge(result[key], value, key)
            else:
                result[key] = _strip_directives(value)
        return result
    if isinstance(patch, list) and isinstance(original, list):
        key = _merge_key(field, [i for i in patch if not _is_delete(i)])
        if key is None:
            key = _merge_key(field, original)
        if key is None:
            return _strip_directives(patch)
        merged = copy.deepcopy(original)
        for item in patch:
            index = next(
                (
                    n
                    for n, o in enumerate(merged)
                    if isinstance(item, dict) and o.get(key) == item.get(key)
                ),
                None,
            )
            if _is_delete(item):
                if index is not None:
                    merged.pop(index)
            elif index is None:
                merged.append(_strip_directives(item))
            else:
                merged[index] = strategic_merge(merged[index], item, field)
        return merged
    return _strip_directives(patch)


def _is_delete(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def merge_patch(original: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(original) if isinstance(original, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer {path!r} must start with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, tokens: list[str]) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError) as exc:
            raise PatchError(f"path segment {token!r} does not exist") from exc
    return node, tokens[-1]


def _get(doc: Any, path: str) -> Any:
    node = doc
    for token in _pointer(path):
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError) as exc:
            raise PatchError(f"path {path!r} does not exist") from exc
    return node


def _remove(doc: Any, path: str) -> Any:
    parent, last = _container(doc, _pointer(path))
    try:
        return parent.pop(int(last)) if isinstance(parent, list) else parent.pop(last)
    except (KeyError, IndexError, ValueError) as exc:
        raise PatchError(f"cannot remove {path!r}: it does not exist") from exc


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return copy.deepcopy(value)
    parent, last = _container(doc, tokens)
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if index > len(parent):
            raise PatchError(f"index {index} out of range in {path!r}")
        parent.insert(index, copy.deepcopy(value))
    elif isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    else:
        raise PatchError(f"cannot add below a scalar at {path!r}")
    return doc


def json_patch(original: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch body must be a list of operations")
    doc = copy.deepcopy(original)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"malformed JSON patch operation {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            _remove(doc, path) if _pointer(path) else None
            doc = _add(doc, path, op.get("value"))
        elif kind == "move":
            value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, _get(doc, op["from"]))
        elif kind == "test":
            if _get(doc, path) != op.get("value"):
                raise PatchError(f"test failed at {path!r}")
        else:
            raise PatchError(f"unknown JSON patch op {kind!r}")
    return doc


# ---------------------------------------------------------------- selectors

_SET_TERM = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str] | None) -> bool:
    """Evaluate a label selector string (`a=b,c!=d,e in (x,y),f,!g`).

    Raises:
        ValueError: the selector cannot be parsed (answered 400).
    """
    if not selector:
        return True
    labels = labels or {}
    for term in _split_terms(selector):
        set_match = _SET_TERM.match(term)
        if set_match:
            key, op, values = set_match.groups()
            options = {v.strip() for v in values.split(",") if v.strip()}
            if (op == "in") != (labels.get(key) in options):
                return False
            continue
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "==" in term or "=" in term:
            key, value = (s.strip() for s in re.split(r"==?", term, maxsplit=1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif re.fullmatch(r"[\w./-]+", term):
            if term not in labels:
                return False
        else:
            raise ValueError(f"unable to parse requirement: {term!r}")
    return True


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    """Evaluate a field selector (`metadata.name=x,status.phase!=Running`)."""
    if not selector:
        return True
    for term in _split_terms(selector):
        negate = "!=" in term
        key, value = (s.strip() for s in re.split(r"!=|==?", term, maxsplit=1))
        node: Any = obj
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        actual = "" if node is None else str(node)
        if (actual == value) == negate:
            return False
    return True


def selector_from_match_labels(selector: dict[str, Any] | None) -> str:
    """Turn a LabelSelector object (matchLabels + matchExpressions) into a selector string."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr["operator"], expr["key"], expr.get("values") or []
        if op in ("In", "NotIn"):
            terms.append(f"{key} {op.lower()} ({','.join(values)})")
        elif op == "Exists":
            terms.append(key)
        elif op == "DoesNotExist":
            terms.append(f"!{key}")
    return ",".join(terms)

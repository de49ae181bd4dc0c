"""The REST contract the gateway adds to the transcoder's, as data for contract.lua.

- Unknown JSON body fields are refused: for every REST route with a JSON body, the message the body
  fills (`body: "*"`: the request message minus the fields bound to the path; `body: "field"`: that
  field's message) and, for every message reachable from it, the names it accepts (the proto name
  and the JSON camelCase name: the transcoder takes both). Well-known types (Struct, Any, …) are
  free-form; streaming uploads and `google.api.HttpBody` bodies are raw bytes, never checked.
- Creates answer 201: a POST binding whose method's name starts with one of policy.toml's
  `[responses] created_prefixes` (Create…, Upload…, Start…) or whose gRPC path is listed in
  `created_methods`. Every other success stays 200.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from gateway.envoy import protoset

HTTP_BODY = "google.api.HttpBody"
FREE_FORM_PACKAGE = "google.protobuf."  # well-known types print as strings, numbers or free objects
_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
_LUA_MAGIC = re.compile(r"([\^$()%.\[\]*+\-?])")


def creates(method: protoset.Method, binding: protoset.Binding, rules: Mapping[str, Any]) -> bool:
    """Whether a successful call of this binding answers 201 Created (see the module doc)."""
    if binding.verb != "post":
        return False
    prefixes = tuple(rules.get("created_prefixes", ()))
    return method.name.startswith(prefixes) or method.grpc_path in rules.get("created_methods", ())


def success_status(method: protoset.Method, binding: protoset.Binding, rules: Mapping[str, Any]) -> int:
    return 201 if creates(method, binding, rules) else 200


def lua_pattern(template: str) -> str:
    """An anchored Lua pattern for a google.api.http path template: `{x}` / `{x=*}` one segment,
    `{x=**}` (or a pattern with `**`) the rest of the path."""
    out = []
    position = 0
    for match in _VARIABLE.finditer(template):
        out.append(_LUA_MAGIC.sub(r"%\1", template[position : match.start()]))
        out.append(".+" if "**" in (match.group(2) or "") else "[^/]+")
        position = match.end()
    out.append(_LUA_MAGIC.sub(r"%\1", template[position:]))
    return "^" + "".join(out) + "$"


def _preference(template: str) -> list[tuple[int, str]]:
    """Sort key: at the first segment where two templates differ, a literal beats a variable (the
    transcoder's path matcher prefers literal segments the same way)."""
    path = _VARIABLE.sub("{}", template)
    return [(1, "") if "{" in segment else (0, segment) for segment in re.split(r"[/:]", path)]


def _pool(fds: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for file in fds.file:
        pool.AddSerializedFile(file.SerializeToString())
    return pool


def _checked(desc: Descriptor | None) -> Descriptor | None:
    """`desc` when its JSON has fixed field names (not an HttpBody, not a well-known type)."""
    if desc is None or desc.full_name == HTTP_BODY or desc.full_name.startswith(FREE_FORM_PACKAGE):
        return None
    return desc


class _Messages:
    """Field names per message, for every message reachable from the checked bodies."""

    def __init__(self) -> None:
        self.table: dict[str, dict[str, dict[str, Any]]] = {}

    def add(self, desc: Descriptor, *, without: Iterable[str] = ()) -> str:
        """Register `desc` (minus `without`) and what it reaches; returns the name to check it by."""
        skip = set(without)
        name = desc.full_name + ("#" + ",".join(sorted(skip)) if skip else "")
        if name in self.table:
            return name
        self.table[name] = {}  # placeholder first: messages may be recursive
        fields: dict[str, dict[str, Any]] = {}
        for f in desc.fields:
            if f.name in skip:
                continue
            entry = self._entry(f)
            fields[f.name] = entry
            fields[f.json_name] = entry
        self.table[name] = fields
        return name

    def _entry(self, f: FieldDescriptor) -> dict[str, Any]:
        if f.type != FieldDescriptor.TYPE_MESSAGE:
            return {}
        desc = f.message_type
        assert desc is not None, f.full_name
        if desc.GetOptions().map_entry:
            value = _checked(desc.fields_by_name["value"].message_type)
            return {"m": self.add(value), "map": True} if value else {}
        checked = _checked(desc)
        return {"m": self.add(checked)} if checked else {}


def build(
    fds: descriptor_pb2.FileDescriptorSet, methods: Iterable[protoset.Method], rules: Mapping[str, Any]
) -> dict[str, Any]:
    """contract.lua's CONFIG: `routes` (in matching order) and `messages` (see contract.lua)."""
    pool = _pool(fds)
    messages = _Messages()
    routes = []
    for method in methods:
        request = pool.FindMessageTypeByName(method.input_type)
        for binding in method.bindings:
            body, is_list = "", False
            if binding.body and not method.client_streaming and _checked(request):
                if binding.body == "*":
                    bound = {m.group(1) for m in _VARIABLE.finditer(binding.path) if "." not in m.group(1)}
                    body = messages.add(request, without=bound)
                else:
                    field = request.fields_by_name[binding.body]
                    if (sub := _checked(field.message_type)) is not None:
                        body, is_list = messages.add(sub), bool(field.is_repeated)
            routes.append(
                {
                    "verb": binding.verb,
                    "template": binding.path,
                    "pattern": lua_pattern(binding.path),
                    "body": body,
                    "list": is_list,
                    "created": creates(method, binding, rules),
                }
            )
    routes.sort(key=lambda r: _preference(str(r["template"])))
    return {"routes": routes, "messages": messages.table}

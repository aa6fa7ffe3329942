"""The building blocks of the models: the frozen base model and the validated field types.

Every type reports its own problem with a fix (see `errors.fail`); its JSON Schema says what
the stack file may hold.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar
from urllib.parse import urlparse

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from config.errors import UNKNOWN, fail

STACK_FILE = "stack-file"  # validation context: the data comes from a stack file


class Model(BaseModel):
    """Frozen, no unknown keys, camelCase keys in the stack file."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,  # Python code builds models by field name
    )
    # key -> the fix shown when the key is missing
    FIXES: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _stack_file_keys_only(cls, data: Any, info: ValidationInfo) -> Any:
        """In a stack file only the camelCase keys count: a field's Python name is unknown."""
        if not (info.context or {}).get(STACK_FILE) or not isinstance(data, dict):
            return data
        names = {name for name, f in cls.model_fields.items() if (f.alias or name) != name}
        return {(f"{UNKNOWN}{k}" if k in names else k): v for k, v in data.items()}


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise fail("must be a non-empty string", "give a value")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise fail(
            "must be a single line (it holds a newline or another control character)",
            "remove the line break; quote the value on one line",
        )
    return raw.strip()


def _int(raw: Any) -> int:
    if isinstance(raw, bool):
        raise fail("must be a whole number, not a boolean", "give a number")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
        return int(raw)
    raise fail("must be a whole number", "give a number")


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise fail("must be true or false", "write true or false")


def _text_list(raw: Any) -> tuple[str, ...]:
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return tuple(_text(x) for x in raw)
    raise fail("must be a list of strings", "give a YAML list, e.g. [a, b]")


Text = Annotated[str, BeforeValidator(_text)]
Int = Annotated[int, BeforeValidator(_int)]
Bool = Annotated[bool, BeforeValidator(_bool)]
TextList = Annotated[tuple[str, ...], BeforeValidator(_text_list)]


@dataclass(frozen=True, eq=False)
class Rule:
    """Annotated metadata: `check` (raises `fail`) runs after the type's own validation;
    `schema` is merged into the field's JSON Schema."""

    check: Callable[[Any], Any]
    schema: dict[str, Any] = field(default_factory=dict)

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.update(self.schema)
        return out


def rule(func: Callable[[Any], Any], **schema: Any) -> Rule:
    return Rule(func, schema)


def ranged(low: int, high: int, unit: str = "", fix: str = "") -> Rule:
    """A whole number in low..high."""

    def _check(value: int) -> int:
        if not low <= value <= high:
            raise fail(
                f"must be {low}..{high}{' ' + unit if unit else ''}",
                fix or "use a value in that range",
            )
        return value

    return Rule(_check, {"minimum": low, "maximum": high})


def pattern(regex: str, what: str, fix: str) -> Rule:
    compiled = re.compile(regex)

    def _check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise fail(what, fix)
        return value

    return Rule(_check, {"pattern": f"^(?:{regex})$"})


def one_of(*choices: str, fix: str = "") -> Rule:
    def _check(value: str) -> str:
        if value not in choices:
            raise fail(
                f"must be {' or '.join(repr(c) for c in choices)}", fix or f"use {choices[0]}"
            )
        return value

    return Rule(_check, {"enum": list(choices)})


# ---------------------------------------------------------------------------------------------
# Names

_HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _hostname(value: str) -> str:
    labels = value.split(".")
    if len(value) > 253 or not all(_HOSTNAME_LABEL.match(label) for label in labels):
        raise fail(
            "is not an RFC 1123 host name (lower-case letters, digits and '-', labels of 1-63 "
            "characters, not starting or ending with '-')",
            "use e.g. smart-smoker-dev-cloud",
        )
    return value


Hostname = Annotated[
    Text, rule(_hostname, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9-]+)*$")
]
UserName = Annotated[
    Text, pattern(r"[a-z_][a-z0-9_-]{0,31}", "is not a Linux user name", "use e.g. smoker")
]

# ---------------------------------------------------------------------------------------------
# Addresses


def _network(value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise fail(
            f"is not an IPv4 network in CIDR form ({exc})", "write it like 10.20.0.0/24"
        ) from None
    if not 8 <= net.prefixlen <= 30:
        raise fail("prefix must be /8../30", "use e.g. a /24")
    return net


def _address(value: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise fail("is not an IPv4 address", "write it like 10.20.0.1") from None


def _interface(value: str) -> ipaddress.IPv4Interface:
    if "/" not in value:
        raise fail("needs a prefix length, e.g. 10.20.0.20/24", "add the prefix length")
    try:
        return ipaddress.IPv4Interface(value)
    except ValueError:
        raise fail("is not an IPv4 address with prefix", "write it like 10.20.0.20/24") from None


Network = Annotated[
    ipaddress.IPv4Network,
    BeforeValidator(lambda raw: _network(_text(raw))),
    WithJsonSchema({"type": "string", "format": "ipv4-network", "examples": ["10.20.0.0/24"]}),
]
Address = Annotated[
    ipaddress.IPv4Address,
    BeforeValidator(lambda raw: _address(_text(raw))),
    WithJsonSchema({"type": "string", "format": "ipv4"}),
]
Interface = Annotated[
    ipaddress.IPv4Interface,
    BeforeValidator(lambda raw: _interface(_text(raw))),
    WithJsonSchema({"type": "string", "format": "ipv4-interface"}),
]
TAILNET_RANGE = ipaddress.IPv4Network("100.64.0.0/10")  # Tailscale's CGNAT addresses


def _https(value: str) -> str:
    url = urlparse(value)
    if url.scheme != "https" or not url.hostname:
        raise fail(
            "must be an https:// URL with a host (the API is TLS-only)", "write https://<host>/..."
        )
    if url.username or url.password:
        hidden = url._replace(netloc="***@" + url.netloc.rsplit("@", 1)[-1]).geturl()
        raise fail("must not hold credentials", "remove user:password@ from the URL", value=hidden)
    try:
        url.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise fail("has an invalid port", "use a port 1..65535") from None
    return value


HttpsUrl = Annotated[Text, rule(_https, format="uri", pattern="^https://")]
Sha256 = Annotated[
    Text,
    pattern(
        r"[0-9a-f]{64}",
        "is not a lower-case hex sha256 digest",
        "copy the release asset's sha256 (e.g. `sha256sum <file>`)",
    ),
]

# ---------------------------------------------------------------------------------------------
# SSH keys

SSH_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


# SSH strings in a key's blob after its type: (count, length of the key field or None).
_KEY_SHAPES = {
    "ssh-ed25519": (1, 32),
    "ssh-rsa": (2, None),
    "ecdsa-sha2-nistp256": (2, None),
    "ecdsa-sha2-nistp384": (2, None),
    "ecdsa-sha2-nistp521": (2, None),
    "sk-ssh-ed25519@openssh.com": (2, 32),
    "sk-ecdsa-sha2-nistp256@openssh.com": (3, None),
}


def _ssh_strings(blob: bytes) -> list[bytes] | None:
    """The blob as SSH wire strings (uint32 length + bytes), or None if it does not parse."""
    out, i = [], 0
    while i < len(blob):
        if i + 4 > len(blob):
            return None
        size = int.from_bytes(blob[i : i + 4], "big")
        if i + 4 + size > len(blob):
            return None
        out.append(blob[i + 4 : i + 4 + size])
        i += 4 + size
    return out


def is_public_key(line: str, comment: bool = True) -> bool:
    """`<type> <base64 blob> [comment]` whose blob decodes to that type's key fields."""
    parts = line.split()
    if len(parts) < 2 or (len(parts) > 2 and not comment) or parts[0] not in SSH_KEY_TYPES:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return False
    fields = _ssh_strings(blob)
    if not fields or fields[0] != parts[0].encode():
        return False
    count, key_length = _KEY_SHAPES[parts[0]]
    if len(fields) != 1 + count or not all(fields[1:]):
        return False
    return key_length is None or len(fields[1]) == key_length


def _host_key(value: str) -> str:
    if not is_public_key(value, comment=False):
        raise fail(
            "is not an SSH public host key ('<type> <base64>', the key's blob must decode)",
            "copy the first two fields of /etc/ssh/ssh_host_ed25519_key.pub from the host",
        )
    return value


HostKey = Annotated[Text, rule(_host_key, pattern="^(ssh-|ecdsa-|sk-)[^ ]+ [A-Za-z0-9+/=]+$")]


def _authorized_keys(raw: Any) -> tuple[str, ...]:
    keys = _text_list(raw)
    for key in keys:
        if not is_public_key(key):
            shown = key if len(key) < 40 else key[:37] + "..."
            raise fail(f"'{shown}' is not an OpenSSH public key line", "paste a ~/.ssh/*.pub line")
    return keys


AuthorizedKeys = Annotated[tuple[str, ...], BeforeValidator(_authorized_keys)]

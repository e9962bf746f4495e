"""Egress allow-lists: what an entry may be, in one place.

An entry is a domain (``pypi.org``), a wildcard domain (``*.pythonhosted.org``:
every name *below* it, not the name itself) or an IPv4/IPv6 network in CIDR
notation (``10.1.2.0/24``; a bare address is a /32 or /128). Entries are
normalised (lower case, no trailing dot, IDNA for non-ASCII names, CIDRs in
their canonical form) so the enforcer in the relay container
(``images/sandbox/egress.py``) compares plain strings and networks.
"""

from __future__ import annotations

import ipaddress
import re

#: At most this many entries per conversation (they travel in a label and a command line).
MAX_ENTRIES = 256
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_entry(text: str) -> str:
    """The canonical form of one allow-list entry; ``ValueError`` saying why when it is none."""
    entry = text.strip().lower()
    if not entry:
        raise ValueError("an empty entry")
    if "/" in entry or _looks_like_address(entry):
        try:
            return str(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is neither a domain nor a CIDR network") from None
    wildcard = entry.startswith("*.")
    name = entry[2:] if wildcard else entry
    try:
        name = name.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{text!r} is not a valid domain name") from None
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(
            f"{text!r} is not a domain (like pypi.org or *.pythonhosted.org) nor a CIDR (like 10.1.2.0/24)"
        )
    if labels[-1].isdigit():
        raise ValueError(f"{text!r} is not a valid domain name (its last label is a number)")
    return f"*.{name}" if wildcard else name


def normalize_entries(entries: list[str]) -> list[str]:
    """Every entry normalised, duplicates dropped (first kept); ``ValueError`` naming each bad one."""
    errors: list[str] = []
    result: list[str] = []
    for index, text in enumerate(entries):
        try:
            entry = normalize_entry(text)
        except ValueError as error:
            errors.append(f"allow[{index}]: {error}")
            continue
        if entry not in result:
            result.append(entry)
    if errors:
        raise ValueError("; ".join(errors))
    return result


def _looks_like_address(entry: str) -> bool:
    try:
        ipaddress.ip_address(entry)
    except ValueError:
        return ":" in entry or entry.replace(".", "").isdigit()
    return True

"""Personal-data detection for the audit log's `sensitive` flag.

Finds mainland-China resident ID numbers (birth date and ISO 7064 checksum verified), mainland mobile
numbers, bank card numbers (Luhn verified) and e-mail addresses. Only the verdict is recorded: the
matched text never leaves this module.
"""

from __future__ import annotations

import datetime as dt
import re

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# Digit runs are bounded by non-digits so a number inside a longer number does not count.
_RESIDENT_ID = re.compile(r"(?<![0-9])([1-9][0-9]{16}[0-9Xx])(?![0-9Xx])")
_MOBILE = re.compile(r"(?<![0-9])(?:\+?86[- ]?)?(1[3-9][0-9][- ]?[0-9]{4}[- ]?[0-9]{4})(?![0-9])")
_CARD = re.compile(r"(?<![0-9])((?:[0-9][ -]?){15,18}[0-9])(?![0-9])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def valid_resident_id(number: str) -> bool:
    if len(number) != 18 or not number[:17].isdigit():
        return False
    try:
        dt.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == number[17].upper()


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def find_kinds(text: str) -> set[str]:
    """The kinds of personal data present: subset of {resident_id, mobile, bank_card, email}."""
    kinds: set[str] = set()
    ids = {m.group(1) for m in _RESIDENT_ID.finditer(text) if valid_resident_id(m.group(1))}
    if ids:
        kinds.add("resident_id")
    if _MOBILE.search(text):
        kinds.add("mobile")
    for match in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group(1))
        if 16 <= len(digits) <= 19 and digits not in {i[:17] for i in ids} and luhn_valid(digits):
            if not (len(digits) == 18 and valid_resident_id(digits)):
                kinds.add("bank_card")
                break
    if _EMAIL.search(text):
        kinds.add("email")
    return kinds


def is_sensitive(*texts: str | None) -> bool:
    return any(find_kinds(t) for t in texts if t)

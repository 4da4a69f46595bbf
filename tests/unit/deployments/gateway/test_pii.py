from __future__ import annotations

import pytest

from deployments.gateway.pii import find_kinds, is_sensitive, luhn_valid, valid_resident_id


def resident_id(body17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body17 + "10X98765432"[sum(int(d) * w for d, w in zip(body17, weights, strict=True)) % 11]


VALID_ID = resident_id("11010519491231002")  # the checksum example of GB 11643: ...002X
VISA_TEST = "4111111111111111"


def test_resident_id_checksum_and_birth_date() -> None:
    assert VALID_ID == "11010519491231002X"
    assert valid_resident_id(VALID_ID) and valid_resident_id(VALID_ID.lower())
    assert not valid_resident_id("110105194912310021")  # wrong check character
    assert not valid_resident_id(resident_id("11010519491332002"))  # month 13: checksum right, date wrong
    assert not valid_resident_id("11010519491231002")  # 17 digits


def test_luhn() -> None:
    assert luhn_valid(VISA_TEST) and luhn_valid("79927398713")  # the textbook Luhn example
    assert not luhn_valid("4111111111111112") and not luhn_valid("79927398710")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"我的身份证号是{VALID_ID}，请核实", "resident_id"),
        ("请拨打13812345678联系我", "mobile"),
        ("call +86 139-1234-5678 today", "mobile"),
        (f"card {VISA_TEST[:4]} {VISA_TEST[4:8]} {VISA_TEST[8:12]} {VISA_TEST[12:]} please", "bank_card"),
        ("write to li.wei@example.com.cn", "email"),
    ],
)
def test_positive_cases(text: str, kind: str) -> None:
    assert kind in find_kinds(text)
    assert is_sensitive("harmless", text)


@pytest.mark.parametrize(
    "text",
    [
        "110105194912310021 has a bad checksum",  # invalid ID, and not Luhn-valid
        "order 4111111111111112 shipped",  # Luhn-invalid card-like number
        "12812345678 is not a mobile prefix",  # 12x is not assigned
        "138123456789 is twelve digits",
        "the meeting is at 10:30 in room 1384",
        "a@b is not an address",
        "",
    ],
)
def test_negative_cases(text: str) -> None:
    assert find_kinds(text) == set()
    assert not is_sensitive(text, None)


def test_resident_id_is_not_also_reported_as_a_card() -> None:
    assert find_kinds(f"ID {VALID_ID}") == {"resident_id"}

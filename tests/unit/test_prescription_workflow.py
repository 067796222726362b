"""The prescription state machine and review rules, without a database."""

from datetime import UTC, date, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from o2o.errors import Conflict
from prescriptions import workflow
from prescriptions.workflow import (
    OrderedItem,
    PrescribedItem,
)
from prescriptions.workflow import (
    PrescriptionStatus as S,
)


def test_happy_path_is_legal():
    path = [S.REQUESTED, S.CLAIMED, S.ISSUED, S.APPROVED, S.DISPENSED]
    for current, nxt in zip(path, path[1:], strict=False):
        workflow.check(current, nxt)


@pytest.mark.parametrize(
    "current, to",
    [
        (S.REQUESTED, S.ISSUED),  # never issued without a claim
        (S.REQUESTED, S.APPROVED),
        (S.CLAIMED, S.APPROVED),  # never approved without a signature
        (S.APPROVED, S.APPROVED),  # used once
        (S.DISPENSED, S.APPROVED),
        (S.EXPIRED, S.APPROVED),
        (S.DECLINED, S.CLAIMED),
        (S.DISPENSED, S.CANCELLED),  # handed over: nothing to give back
        (S.REJECTED, S.ISSUED),
    ],
)
def test_illegal_transitions_are_409(current, to):
    assert not workflow.allowed(current, to)
    with pytest.raises(Conflict) as exc:
        workflow.check(current, to)
    assert exc.value.status_code == 409 and exc.value.code == "illegal_transition"


def test_an_approved_fill_not_handed_over_can_be_cancelled():
    workflow.check(S.APPROVED, S.CANCELLED)


def test_closed_states_go_nowhere():
    for closed in (S.DECLINED, S.REJECTED, S.DISPENSED, S.EXPIRED, S.CANCELLED):
        assert not any(workflow.allowed(closed, to) for to in S)


def test_mask_keeps_four_and_four():
    assert workflow.mask_id_number("110101199001011234") == "1101**********1234"
    assert workflow.mask_id_number("AB12345678") == "AB******78"
    assert workflow.mask_id_number("AB123456") == "A******6"
    assert workflow.mask_id_number("123456") == "1****6"


@given(st.text(alphabet="0123456789X", min_size=6, max_size=32))
def test_mask_never_shows_the_middle(number):
    masked = workflow.mask_id_number(number)
    assert len(masked) == len(number)
    shown = len(masked) - masked.count("*")
    assert shown <= 8 and shown * 2 <= len(number)
    assert masked[: shown // 2] == number[: shown // 2]


def test_normalise_id_number():
    assert workflow.normalise_id_number(" 1101 0119-9001 01123x ") == "11010119900101123X"


def test_items_outside_prescription():
    ordered = [
        OrderedItem(1, 2, True),
        OrderedItem(2, 5, True),
        OrderedItem(3, 1, True),
        OrderedItem(9, 100, False),  # over-the-counter lines need no prescription
    ]
    prescribed = [PrescribedItem(1, 2, 7), PrescribedItem(2, 3, 7)]
    assert workflow.items_outside_prescription(ordered, prescribed) == [
        {"product_id": 2, "ordered": 5, "prescribed": 3, "reason": "more than prescribed"},
        {"product_id": 3, "ordered": 1, "prescribed": 0, "reason": "not prescribed"},
    ]
    assert workflow.items_outside_prescription(ordered[:1], prescribed) == []


def test_course_end_and_lot_lasts():
    issued = datetime(2026, 11, 23, 22, 0, tzinfo=UTC)
    assert workflow.course_end(issued, 7) == date(2026, 11, 30)
    assert workflow.lot_lasts_course(date(2026, 11, 30), issued, 7)
    assert not workflow.lot_lasts_course(date(2026, 11, 29), issued, 7)


@pytest.mark.parametrize(
    "head, expected",
    [
        (b"\xff\xd8\xff\xe0rest", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\nrest", "image/png"),
        (b"%PDF-1.4", "application/pdf"),
        (b"MZ\x90\x00", None),
        (b"GIF89a", None),
        (b"<svg", None),
        (b"", None),
        (b"\x89PNG", None),  # truncated magic
    ],
)
def test_sniff_attachment_type(head, expected):
    assert workflow.sniff_attachment_type(head) == expected


def test_claimed_attachment_types():
    assert workflow.claimed_attachment_types("scan.PNG", "image/png") == {"image/png"}
    assert workflow.claimed_attachment_types("scan", "application/octet-stream") == set()
    assert workflow.claimed_attachment_types("a.pdf.exe", None) == {"file/.exe"}
    assert workflow.claimed_attachment_types("photo.jpg", "image/jpg") == {"image/jpeg"}
    assert workflow.claimed_attachment_types(None, "text/html; charset=utf-8") == {"text/html"}


def test_waited_and_overdue():
    t0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    t1 = datetime(2026, 1, 1, 10, 15, 30, tzinfo=UTC)
    assert workflow.waited_minutes(t0, t1) == 15
    assert workflow.waited_minutes(t1, t0) == 0
    assert workflow.is_overdue(t0, t1, 15) and not workflow.is_overdue(t0, t1, 16)

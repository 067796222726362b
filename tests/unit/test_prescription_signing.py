"""Canonical payload bytes and Ed25519 signing, without a database."""

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prescriptions import signing


def test_canonical_bytes_sorted_compact_utf8():
    doc = {"b": 1, "a": {"z": "维", "y": [2, 1]}}
    assert signing.canonical_bytes(doc) == '{"a":{"y":[2,1],"z":"维"},"b":1}'.encode()


scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = (
    scalars
    | st.lists(scalars, max_size=4)
    | st.dictionaries(st.text(max_size=4), scalars, max_size=4)
)


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=6), json_values, max_size=5))
def test_canonical_bytes_independent_of_key_order(doc):
    reversed_doc = dict(reversed(list(doc.items())))
    assert signing.canonical_bytes(doc) == signing.canonical_bytes(reversed_doc)


def test_sign_verify_and_any_change_breaks_it():
    key = signing.generate_private_key()
    public = base64.b64decode(signing.public_key_b64(key))
    payload = signing.canonical_bytes({"items": [{"product_id": 1, "quantity": 2}]})
    signature = signing.sign(key, payload)
    assert signing.verify(public, payload, signature)
    changed = signing.canonical_bytes({"items": [{"product_id": 1, "quantity": 3}]})
    assert not signing.verify(public, changed, signature)
    other = base64.b64decode(signing.public_key_b64(signing.generate_private_key()))
    assert not signing.verify(other, payload, signature)
    assert not signing.verify(public, payload, signature[:-1])
    assert not signing.verify(public, payload, b"\x00" * 64)


def test_parse_public_key():
    key = signing.generate_private_key()
    assert len(signing.parse_public_key(signing.public_key_b64(key))) == 32
    for bad in (
        "",
        "!!!",
        base64.b64encode(b"x" * 31).decode(),
        base64.b64encode(b"x" * 64).decode(),
    ):
        with pytest.raises(signing.KeyFormatError):
            signing.parse_public_key(bad)


def test_private_key_round_trip(tmp_path):
    key = signing.generate_private_key()
    path = tmp_path / "k.pem"
    signing.write_private_key(key, path)
    assert signing.public_key_b64(signing.read_private_key(path)) == signing.public_key_b64(key)
    with pytest.raises(FileExistsError):
        signing.write_private_key(key, path)

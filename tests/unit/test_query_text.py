"""A query string is walked for text the database cannot store only when it could hold some
(`o2o.api.query_may_be_unstorable`): this holds the shortcut to what the walk itself would find
in the parameters as Starlette reads them, for any bytes a client may send."""

from hypothesis import example, given
from hypothesis import strategies as st
from starlette.datastructures import QueryParams

from o2o.api import query_may_be_unstorable
from o2o.text import first_unstorable

# Bytes a query string is made of, with the escapes that decode to NULs, surrogates' UTF-8 and
# other invalid sequences drawn often.
PIECES = st.sampled_from(
    [
        b"a",
        b"=",
        b"&",
        b"+",
        b";",
        b"%",
        b"%00",
        b"%0",
        b"%ed%a0%80",
        b"%ED%BF%BF",
        b"%c0%80",
        b"%e2%82%ac",
        b"\x00",
        b"\xed\xa0\x80",
        b"%f0%9f%98%80",
        b"%d8%00",
        b"%u0000",
    ]
)
QUERY = st.lists(st.one_of(PIECES, st.binary(max_size=4)), max_size=12).map(b"".join)


@given(QUERY)
@example(b"q=%00")
@example(b"%00=1")
@example(b"q=a\x00b")
@example(b"q=%ed%a0%80")
def test_a_query_passed_over_holds_nothing_the_database_cannot_store(query):
    found = first_unstorable(QueryParams(query).multi_items())
    if not query_may_be_unstorable(query):
        assert found is None, (query, found)


def test_a_nul_raw_or_escaped_is_never_passed_over():
    for query in (b"q=%00", b"%00=1", b"q=a\x00b", b"a=1&b=%00x"):
        assert query_may_be_unstorable(query)
        assert first_unstorable(QueryParams(query).multi_items()) is not None

"""Choosing the language from Accept-Language, and formatting for each locale (o2o.i18n)."""

from datetime import UTC, date, datetime

import pytest

from o2o import i18n


@pytest.mark.parametrize(
    ("header", "locale"),
    [
        (None, "en"),
        ("", "en"),
        ("zh-CN", "zh_CN"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh_CN"),
        ("zh", "zh_CN"),
        ("zh-Hans-CN", "zh_CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en;q=0.4, zh-CN;q=0.8", "zh_CN"),
        ("fr-FR, de;q=0.9", "en"),
        ("fr-FR, zh;q=0.5", "zh_CN"),
        ("zh-CN;q=0", "en"),
        ("zh-CN;q=banana", "en"),
        ("*", "en"),
    ],
)
def test_negotiate_picks_the_preferred_supported_language(header, locale) -> None:
    assert i18n.negotiate(header) == locale


def test_outside_a_request_the_source_language_is_spoken() -> None:
    assert i18n.current_locale() == "en"
    with i18n.use_locale("zh_CN"):
        assert i18n.current_locale() == "zh_CN"
    assert i18n.current_locale() == "en"


def test_money_numbers_and_dates_follow_the_locale() -> None:
    at = datetime(2026, 12, 5, 7, 30, tzinfo=UTC)  # 15:30 in Shanghai
    with i18n.use_locale("zh_CN"):
        assert i18n.money(123456, "CNY") == "¥1,234.56"
        assert i18n.money(-500, "CNY") == "-¥5.00"
        assert i18n.number(1234567) == "1,234,567"
        assert i18n.percent(0.953) == "95.3%"
        assert i18n.local_datetime(at, "Asia/Shanghai") == "2026年12月5日 15:30"
        assert i18n.local_datetime(at, "Asia/Shanghai", i18n.TIME) == "15:30"
        assert i18n.day(date(2026, 12, 5)) == "2026年12月5日"
    with i18n.use_locale("en"):
        assert i18n.money(123456, "CNY") == "CN¥1,234.56"
        assert i18n.money(500, "JPY") == "¥500"
        assert i18n.local_datetime(at, "Asia/Shanghai") == "Dec 5, 2026, 15:30"
        assert i18n.local_datetime(at, "Pacific/Kiritimati", i18n.TIME) == "21:30"
        assert i18n.day(date(2026, 12, 5)) == "Dec 5, 2026"
    assert i18n.money(None) == "–"


def test_plural_forms_come_from_the_catalogue() -> None:
    one, many = (
        "The pickup code is wrong; {left} try left.",
        "The pickup code is wrong; {left} tries left.",
    )
    assert i18n.ngettext(one, many, 1).format(left=1).endswith("1 try left.")
    assert i18n.ngettext(one, many, 2).format(left=2).endswith("2 tries left.")
    with i18n.use_locale("zh_CN"):
        assert i18n.ngettext(one, many, 2).format(left=2) == "取货码错误；还可尝试 2 次。"

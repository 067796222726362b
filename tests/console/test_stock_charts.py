"""The stock analytics charts as pure SVG: well-formed, one bar per product, coloured by class."""

import xml.etree.ElementTree as ET

from o2o.console import svg

NS = {"s": svg.SVG_NS}


def test_pareto_bars_in_class_colours_with_the_cumulative_line():
    bars = [
        svg.ParetoBar("Amoxicillin", 500, 0.5, "A"),
        svg.ParetoBar("Ibuprofen <200 mg>", 300, 0.8, "A"),
        svg.ParetoBar("Loratadine", 150, 0.95, "B"),
        svg.ParetoBar("Zinc", 50, 1.0, "C"),
    ]
    root = ET.fromstring(svg.pareto_chart(bars))
    rects = root.findall(".//s:rect", NS)
    assert [r.get("data-class") for r in rects] == ["A", "A", "B", "C"]
    assert rects[0].get("fill") == svg.CLASS_COLOURS["A"] != rects[3].get("fill")
    # Bar heights follow the values; the escaped name is in the tooltip.
    heights = [float(r.get("height")) for r in rects]
    assert heights == sorted(heights, reverse=True) and heights[0] > 3 * heights[3]
    assert "Ibuprofen <200 mg>" in rects[1].find("s:title", NS).text
    line = root.find(".//s:polyline", NS)
    assert len(line.get("points").split()) == 4
    assert len(root.findall(".//s:line[@class='class-limit']", NS)) == 2


def test_pareto_without_sales_says_so():
    root = ET.fromstring(svg.pareto_chart([]))
    assert "No sales in this period" in "".join(root.itertext())


def test_stock_days_caps_long_bars_and_marks_unsold_products():
    rows = [
        svg.StockDays("Fast", 12.5, "A"),
        svg.StockDays("Slow", 900.0, "C"),
        svg.StockDays("Dead", None, "C"),
    ]
    root = ET.fromstring(svg.stock_days_chart(rows, cap_days=180))
    rects = root.findall(".//s:rect", NS)
    assert [r.get("data-days") for r in rects] == ["12.5", "900.0"]
    assert float(rects[1].get("width")) > float(rects[0].get("width"))
    text = "".join(root.itertext())
    assert "no sales" in text and "900" in text

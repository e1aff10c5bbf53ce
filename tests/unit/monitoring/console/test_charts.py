"""The console's inline SVG charts: escaped, accessible, deterministic, gaps at NaN, and a
"no data yet" figure instead of an empty plot."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import pytest

from plumbline.monitoring.console.charts import Series, bar_chart, line_chart

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
EVIL = "<script>alert(1)</script>"


def _svg(html: str) -> ET.Element:
    match = re.search(r"<svg\b.*</svg>", html, re.S)
    assert match, html
    return ET.fromstring(match.group(0))


def _series_group(svg: ET.Element, index: int) -> ET.Element:
    groups = [g for g in svg.iter("g") if f"series-{index}" in g.get("class", "").split()]
    assert len(groups) == 1
    return groups[0]


def _desc(svg: ET.Element) -> str:
    desc = svg.find("desc")
    assert desc is not None and desc.text
    return desc.text


def _ramp(n: int = 12, start: float = 0.8, step_s: float = 600.0) -> list[tuple[float, float]]:
    return [(T0 + i * step_s, start + 0.01 * i) for i in range(n)]


def test_labels_and_titles_are_escaped() -> None:
    title = f"AUC {EVIL} a&b"
    line = line_chart(title, [Series(EVIL, _ramp()), Series("a&b", _ramp())], unit="a&b")
    bars = bar_chart(title, [(EVIL, 0.3), ("a&b", 0.1)], unit="<u>")
    for html in (line, bars):
        assert "<script" not in html
        assert "&lt;script&gt;" in html
        assert "a&amp;b" in html
        assert "<u>" not in html
        # Escaped, not mangled: the text reads back as given.
        svg = _svg(html)
        assert svg.findtext("title") == title
        assert EVIL in _desc(svg)
    legend = [t for g in _svg(line).iter("g") if g.get("class") == "legend" for t in g.iter("text")]
    assert [t.text for t in legend] == [EVIL, "a&b"]


def test_nothing_is_loaded_or_run() -> None:
    html = line_chart("t", [Series("s", _ramp())], threshold=0.85) + bar_chart("b", [("x", 1.0)])
    assert "<script" not in html
    assert "http" not in html
    assert "style=" not in html
    assert "href" not in html


def test_whole_figure_parses_as_xml() -> None:
    for html in (
        line_chart("t", [Series("s", _ramp())], threshold=0.85),
        bar_chart("b", [("x", 1.0), ("y", math.nan)], threshold=0.5),
        line_chart("empty", []),
    ):
        figure = ET.fromstring(html)
        assert figure.tag == "figure"
        assert "chart" in figure.get("class", "").split()
        assert figure.find("figcaption") is not None


def test_svg_is_labelled_by_its_own_title_and_desc() -> None:
    svg = _svg(line_chart("Accuracy", [Series("version 3", _ramp())]))
    assert svg.get("role") == "img"
    ids = (svg.get("aria-labelledby") or "").split()
    title, desc = svg.find("title"), svg.find("desc")
    assert title is not None and desc is not None
    assert ids == [title.get("id"), desc.get("id")]


def test_nan_splits_a_line_into_two() -> None:
    points = _ramp()
    points[5] = (points[5][0], math.nan)
    points[6] = (points[6][0], math.inf)
    svg = _svg(line_chart("t", [Series("s", points)]))
    lines = _series_group(svg, 0).findall("polyline")
    assert len(lines) == 2
    assert [len((pl.get("points") or "").split()) for pl in lines] == [5, 5]


def test_a_lone_point_is_a_circle() -> None:
    svg = _svg(line_chart("t", [Series("s", [(T0, 5.0)])]))
    group = _series_group(svg, 0)
    assert group.findall("polyline") == []
    assert len(group.findall("circle")) == 1
    # And a point isolated between gaps too.
    points = [(T0, 1.0), (T0 + 60, math.nan), (T0 + 120, 2.0), (T0 + 180, math.nan)]
    group = _series_group(_svg(line_chart("t", [Series("s", points)])), 0)
    assert len(group.findall("circle")) == 2


def test_desc_states_each_series_latest_value() -> None:
    v3 = [(T0, 0.5), (T0 + 60, 0.812), (T0 + 120, math.nan)]  # a trailing gap: 0.812 is latest
    v4 = [(T0, 1.0), (T0 + 120, 12_500.0)]
    tiny = [(T0, 3.1e-05)]
    desc = _desc(
        _svg(
            line_chart(
                "Scores",
                [Series("version 3", v3), Series("version 4", v4), Series("tiny", tiny)],
                unit="ms",
            )
        )
    )
    assert "version 3: latest 0.812 ms at 2023-11-14 22:14 UTC" in desc
    assert "version 4: latest 12.5k ms" in desc
    assert "tiny: latest 3.1e-05 ms" in desc


def test_a_series_without_values_says_so_in_the_desc() -> None:
    html = line_chart("t", [Series("live", _ramp()), Series("old", [(T0, math.nan)])])
    assert "old: no data" in _desc(_svg(html))


def test_threshold_line_only_when_given() -> None:
    with_line = _svg(line_chart("t", [Series("s", _ramp())], threshold=0.85))
    marks = [g for g in with_line.iter("g") if g.get("class") == "threshold"]
    assert len(marks) == 1
    line = marks[0].find("line")
    assert line is not None and line.get("stroke-dasharray")
    assert "Threshold 0.85" in _desc(with_line)
    without = line_chart("t", [Series("s", _ramp())])
    assert 'class="threshold"' not in without


def test_threshold_outside_the_data_widens_the_axis() -> None:
    svg = _svg(line_chart("t", [Series("s", [(T0, 0.01), (T0 + 60, 0.02)])], threshold=0.2))
    assert any(g.get("class") == "threshold" for g in svg.iter("g"))


def _y_labels(svg: ET.Element) -> list[str]:
    axis = next(g for g in svg.iter("g") if g.get("class") == "axis")
    return [t.text or "" for t in axis.iter("text") if t.get("text-anchor") == "end"]


def _x_labels(svg: ET.Element) -> list[str]:
    axis = next(g for g in svg.iter("g") if g.get("class") == "axis")
    return [t.text or "" for t in axis.iter("text") if t.get("text-anchor") == "middle"]


@pytest.mark.parametrize(
    "points",
    [
        _ramp(),
        [(T0 + i, 7.0) for i in range(5)],  # flat
        [(T0 + i, 0.0) for i in range(5)],  # flat at zero
        [(T0, 1e-6), (T0 + 1, 3e-6)],
        [(T0, 1e6), (T0 + 1, 1.5e6)],
        [(T0, -40.0), (T0 + 1, 60.0)],
    ],
)
def test_value_axis_has_three_to_five_distinct_ticks(points: list[tuple[float, float]]) -> None:
    labels = _y_labels(_svg(line_chart("t", [Series("s", points)])))
    assert 3 <= len(labels) <= 5
    assert len(set(labels)) == len(labels)


def test_flat_series_still_draws_a_line() -> None:
    svg = _svg(line_chart("t", [Series("s", [(T0 + i * 60, 0.5) for i in range(5)])]))
    assert len(_series_group(svg, 0).findall("polyline")) == 1


def test_y_min_and_y_max_clamp_the_axis() -> None:
    points = [(T0, -0.5), (T0 + 60, 0.4), (T0 + 120, 1.7)]
    svg = _svg(line_chart("t", [Series("s", points)], y_min=0.0, y_max=1.0))
    labels = _y_labels(svg)
    assert labels[0] == "0" and labels[-1] == "1"
    ys = [
        float(xy.split(",")[1])
        for pl in _series_group(svg, 0).iter("polyline")
        for xy in (pl.get("points") or "").split()
    ]
    grid = next(g for g in svg.iter("g") if g.get("class") == "grid")
    grid_ys = [float(ln.get("y1") or "nan") for ln in grid.iter("line")]
    assert min(grid_ys) <= min(ys) and max(ys) <= max(grid_ys)


def test_time_axis_shows_clock_times_then_dates() -> None:
    hours = _x_labels(_svg(line_chart("t", [Series("s", _ramp())])))
    assert hours and all(re.fullmatch(r"\d\d:\d\d", label) for label in hours)
    week = [(T0 + i * 86400.0, float(i)) for i in range(7)]
    days = _x_labels(_svg(line_chart("t", [Series("s", week)])))
    assert days and all(re.fullmatch(r"\d{1,2} [A-Z][a-z]{2}", label) for label in days)


def test_series_cycle_eight_classes_with_default_colours() -> None:
    series = [Series(f"s{i}", _ramp()) for i in range(9)]
    svg = _svg(line_chart("t", series))
    classes = [g.get("class", "") for g in svg.iter("g") if "series" in g.get("class", "")]
    assert classes[0] == "series series-0" and classes[8] == "series series-0"
    assert "series-8" not in " ".join(classes)
    strokes = [g.get("stroke") for g in svg.iter("g") if "series" in g.get("class", "")]
    assert all(strokes) and len(set(strokes)) == 8
    assert any(g.get("class") == "legend" for g in svg.iter("g"))


@pytest.mark.parametrize(
    "series",
    [[], [Series("s", [])], [Series("s", [(T0, math.nan), (T0 + 1, math.inf)])]],
)
def test_line_chart_without_data_says_no_data_yet(series: list[Series]) -> None:
    html = line_chart("Latency <p99>", series)
    assert "<svg" not in html
    caption = ET.fromstring(html).findtext("figcaption") or ""
    assert "no data yet" in caption
    assert "Latency <p99>" in caption


def test_bar_chart_without_bars_says_no_data_yet() -> None:
    html = bar_chart("PSI", [])
    assert "<svg" not in html
    assert "no data yet" in (ET.fromstring(html).findtext("figcaption") or "")


def _bars(svg: ET.Element) -> list[tuple[str, str, str | None]]:
    """(label, printed value, rect class) per bar, top to bottom."""
    out = []
    for g in svg.iter("g"):
        texts = g.findall("text")
        if g.find("title") is not None and len(texts) == 2:
            rect = g.find("rect")
            out.append(
                (
                    texts[0].text or "",
                    texts[1].text or "",
                    None if rect is None else rect.get("class"),
                )
            )
    return out


def test_bars_largest_first_with_values_and_over_class() -> None:
    bars = [("age", 0.05), ("income", 0.31), ("nan", math.nan), ("hours", 0.2), ("edu", 0.12)]
    svg = _svg(bar_chart("PSI by feature", bars, threshold=0.1))
    assert _bars(svg) == [
        ("income", "0.31", "bar over"),
        ("hours", "0.2", "bar over"),
        ("edu", "0.12", "bar over"),
        ("age", "0.05", "bar"),
        ("nan", "n/a", None),
    ]
    mark = next(g for g in svg.iter("g") if g.get("class") == "threshold")
    line = mark.find("line")
    assert line is not None and line.get("stroke-dasharray")
    desc = _desc(svg)
    assert "income 0.31" in desc and "3 above (income, hours, edu)" in desc


def test_bars_without_threshold_are_never_over() -> None:
    html = bar_chart("b", [("a", 5.0), ("b", 50.0)])
    assert "over" not in html
    assert 'class="threshold"' not in html


def test_negative_bars_render() -> None:
    rows = _bars(_svg(bar_chart("delta", [("down", -2.0), ("up", 3.0)])))
    assert [label for label, _, _ in rows] == ["up", "down"]


def test_output_is_deterministic() -> None:
    def render() -> str:
        points = [(T0, 0.1), (T0 + 60, math.nan), (T0 + 120, 0.3)]
        return line_chart(
            "Drift", [Series("a", points), Series("b", _ramp())], threshold=0.2
        ) + bar_chart("PSI", [("a", 0.3), ("b", 0.3), ("c", 0.1)], threshold=0.2)

    assert render() == render()


def test_ids_are_unique_across_titles() -> None:
    def ids(html: str) -> set[str]:
        return {el.get("id") or "" for el in _svg(html).iter() if el.get("id")}

    first = ids(line_chart("Accuracy", [Series("s", _ramp())]))
    # Titles that slug alike still differ by the hash.
    second = ids(line_chart("accuracy!", [Series("s", _ramp())]))
    third = ids(bar_chart("PSI", [("a", 1.0)]))
    assert len(first) == len(second) == len(third) == 2
    assert not first & second and not first & third and not second & third
    assert all(re.fullmatch(r"[a-z][a-z0-9-]*", i) for i in first | second | third)

"""The assessment figures as CSV (UTF-8 with BOM, for Excel) and XLSX (openpyxl): no personal data."""

from __future__ import annotations

import csv
import io
from typing import Any

from openpyxl import Workbook

from schemas.reference import Jurisdiction
from services.closer import figures, stats

HEADERS = {
    "zh": {
        "key": "编号",
        "name": "名称",
        "reports": "上报数",
        "cases": "案件数",
        "on_time_ack_rate": "按时签收率",
        "on_time_resolve_rate": "按时办结率",
        "median_hours_to_close": "结案时长中位数(小时)",
        "reopen_rate": "重办率",
        "avg_rating": "平均评分",
        "returns": "退回",
        "extensions": "延期",
        "common_issues": "共性问题",
        "nudges": "催办",
        "closed": "结案数",
        "confirmed_fixes": "骑手确认解决",
    },
    "en": {
        "key": "key",
        "name": "name",
        "reports": "reports",
        "cases": "cases",
        "on_time_ack_rate": "on-time acknowledgement rate",
        "on_time_resolve_rate": "on-time resolution rate",
        "median_hours_to_close": "median hours to close",
        "reopen_rate": "reopen rate",
        "avg_rating": "average rating",
        "returns": "returns",
        "extensions": "extensions",
        "common_issues": "common issues",
        "nudges": "nudges",
        "closed": "closed",
        "confirmed_fixes": "fixes confirmed by riders",
    },
}


def header(lang: str) -> list[str]:
    """The column titles in a language (zh or en)."""
    names = HEADERS["en" if lang == "en" else "zh"]
    return [names["key"], names["name"], *(names[f] for f in figures.FIGURES)]


def _cells(result: stats.Stats, j: Jurisdiction, lang: str) -> list[list[Any]]:
    return [header(lang), *stats.table(result, j, lang)]


def as_csv(result: stats.Stats, j: Jurisdiction, lang: str) -> bytes:
    """The figures as CSV; empty cells where a rate has nothing to rate."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in _cells(result, j, lang):
        writer.writerow(["" if v is None else v for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def as_xlsx(result: stats.Stats, j: Jurisdiction, lang: str) -> bytes:
    """The figures as one XLSX sheet, rates formatted as percentages."""
    book = Workbook()
    sheet = book.active
    assert sheet is not None  # a new workbook has one sheet
    sheet.title = f"{result.period.start:%Y%m%d}-{result.period.end:%Y%m%d}"
    rates = {
        i + 3 for i, f in enumerate(figures.FIGURES) if f.endswith("_rate")
    }  # 1-based columns after key and name
    for row in _cells(result, j, lang):
        sheet.append(row)
    for column in rates:
        for (cell,) in sheet.iter_rows(min_row=2, min_col=column, max_col=column):
            cell.number_format = "0.0%"
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def filename(result: stats.Stats, scope: str, ext: str) -> str:
    """An export's file name: stats-<by>-<scope>-<from>-<to>.<ext>."""
    p = result.period
    return f"stats-{result.by}-{scope}-{p.start.isoformat()}-{p.end.isoformat()}.{ext}"

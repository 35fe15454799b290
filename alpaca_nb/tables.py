"""Tables of model text for the lessons, safe to render in a notebook or on the course site.

pandas' ``Styler`` writes cell text into HTML as it is: an answer ``<script>...</script>`` would run in the
reader's browser when the executed lesson is opened as a page. Every table here escapes its cells and labels
(``Styler.format(escape="html")``, ``format_index(escape="html")``), so model text shows as text.
"""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
from pandas.io.formats.style import Styler

TRAINED = "background-color: #c6efce"
MASKED = "color: #999"
LEFT_WRAPPED = {"text-align": "left", "white-space": "pre-wrap"}


def text_table(frame: pd.DataFrame, row_style: Callable[[pd.Series], Sequence[str]] | None = None,
               wrap: bool = True) -> Styler:
    """``frame`` as a Styler with HTML-escaped cells, index and column labels.

    ``row_style`` maps a row to one CSS string per cell (``Styler.apply(..., axis=1)``); ``wrap`` keeps
    the text's own line breaks and aligns it left, for answers.
    """
    styler = frame.style.format(escape="html").format_index(escape="html", axis=0).format_index(escape="html", axis=1)
    if row_style is not None:
        styler = styler.apply(row_style, axis=1)
    if wrap:
        styler = styler.set_properties(**LEFT_WRAPPED)
    return styler


def trained_style(trained: bool) -> str:
    """The lessons' cell colour for tokens the loss sees (green) and masked ones (grey)."""
    return TRAINED if trained else MASKED

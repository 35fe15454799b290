"""Model text in the lessons' tables renders as text, never as live HTML, through the real notebook renderer."""
import json
import re

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"

LESSON_CELL = f"""
import pandas as pd
from alpaca_nb import heldout, mt_bench, tables
hostile = {HOSTILE!r}
results = {{"base": {{"answers": [{{"instruction": "Say hi", "reference": "hi", "answer": hostile}}]}},
            "fine-tuned": {{"answers": [{{"instruction": "Say hi", "reference": "hi", "answer": "hi"}}]}}}}
display(tables.text_table(pd.DataFrame(heldout.answers_side_by_side(results))))
questions = [{{"question_id": 81, "category": "writing", "turns": [hostile]}}]
answers = [{{"question_id": 81, "choices": [{{"turns": [hostile]}}]}}]
display(tables.text_table(mt_bench.answer_table(answers, questions)))
tokens = pd.DataFrame({{"token": [hostile, "ok"], "trained": [False, True]}}).set_index("token").T
display(tables.text_table(tokens, wrap=False, row_style=lambda row: [tables.trained_style(True)] * len(row)))
"""


def test_hostile_model_text_is_escaped_in_the_rendered_lesson(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LESSON_CELL)])
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = [o for o in nb.cells[0].outputs if o.output_type == "display_data"]
    assert len(outputs) == 3 and all("text/html" in o.data for o in outputs)
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "<script>alert(1)" not in html
    assert not re.search(r"<img[^>]*onerror", html)
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # shown as text: 2 answers, 1 question, 1 label
    assert "background-color: #c6efce" in json.dumps(outputs[2].data)  # styling still applies

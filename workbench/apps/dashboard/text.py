"""User and model text (task names, paths, questions, answers, error messages) shown as typed in Streamlit's Markdown.

Streamlit renders `st.markdown`, `st.caption`, the alert boxes, `st.toast`, widget labels, radio options, tabs,
expander and metric labels as GitHub Markdown with LaTeX (`$…$`), colour directives (`:red[…]`) and, with
`unsafe_allow_html`, raw HTML. A task name an LLM wrote (`a~~b~~`, `x*y*`, `$5$`, `<b>bold</b>`, `` `code` ``,
`[link](http://x)`) would be struck through, emphasised, typeset, bolded or linked. CommonMark lets a backslash
escape any ASCII punctuation character, so `md` escapes them all: that also covers line starts (`#`, `-`, `1.`,
`>`), entities (`&amp;`), directives and `$`. Neither Streamlit nor a maintained library ships such a helper.

Where text is NOT Markdown, leave it raw: `st.dataframe`/`st.table` cells, `st.code`, `st.text`, selectbox and
multiselect options (plain text). Plotly labels and hover text are HTML: use `html.escape` there.
"""

from __future__ import annotations

import html
import string

_ESCAPES = str.maketrans({c: "\\" + c for c in string.punctuation})


def md(text: object) -> str:
    """`text` for a Markdown context, shown exactly as typed (None shows as an empty string)."""
    return "" if text is None else str(text).replace("\r\n", "\n").translate(_ESCAPES).replace("\n", "  \n")


def plotly_text(text: object) -> str:
    """`text` for a Plotly label, hover text or hover template (HTML tags and `%{…}` fields), shown as typed."""
    return html.escape("" if text is None else str(text)).replace("%", "&#37;")

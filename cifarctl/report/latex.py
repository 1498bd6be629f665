r"""`cifarctl report --format latex`: the report's tables as LaTeX, to `\input` in a paper.

    cifarctl report -e lt100 --format latex > tables.tex
    % preamble: \usepackage{booktabs,graphicx}   body: \input{tables}

One `table` float per table of the report (per class, head-to-head, literature) with the
caption every other format prints, booktabs rules, and a table wider than `WIDE` columns
scaled to the line width. Text is escaped and the report's own symbols (β, ±, Δ, †) become
math, so the file compiles with pdflatex as written (tests/test_report_latex.py does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cifarctl.report.render import (
    TextTable,
    head_to_head_table,
    header_lines,
    literature_table,
    per_class_table,
)

if TYPE_CHECKING:
    from cifarctl.report.build import Report

PREAMBLE = r"\usepackage{booktabs,graphicx}"
WIDE = 8  # columns: the per-class table (17 or more) never fits a text width unscaled

_CHARS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}", '"': "''",
    "±": r"$\pm$", "−": r"$-$", "—": "---", "–": "--", "†": r"$^\dagger$", "Δ": r"$\Delta$",
    "α": r"$\alpha$", "β": r"$\beta$", "γ": r"$\gamma$", "ε": r"$\varepsilon$",
    "ρ": r"$\rho$", "τ": r"$\tau$", "×": r"$\times$",
}


def escape(text: str) -> str:
    """`text` for LaTeX's text mode. Latin letters with accents pass (LaTeX reads UTF-8);
    any other character pdflatex has no glyph for (a class name in another script) is `?`."""
    return "".join(_CHARS.get(c, c if c.isascii() or (c.isalpha() and ord(c) < 0x250)
                              else "?") for c in text)


def table(t: TextTable, label: str) -> str:
    """One `table` float: caption (title, then the table's caption), label `tab:<label>`."""
    row = " & ".join
    body = [rf"\begin{{tabular}}{{l{'r' * (len(t.headers) - 1)}}}", r"\toprule",
            row(map(escape, t.headers)) + r" \\", r"\midrule",
            *(row(map(escape, cells)) + r" \\" for cells in t.rows),
            r"\bottomrule", r"\end{tabular}"]
    if len(t.headers) > WIDE:
        body = [r"\resizebox{\linewidth}{!}{%", *body, "}"]
    caption = escape(t.title) + (f". {escape(t.caption)}" if t.caption else "")
    return "\n".join([r"\begin{table}[ht]", r"\centering", rf"\caption{{{caption}}}",
                      rf"\label{{tab:{label}}}", *body, r"\end{table}"])


def latex(report: Report) -> str:
    """Every non-empty table as a float; where the numbers come from and the report's notes
    as comments above them (they matter, but belong in the paper only in the author's words)."""
    tables = {"per-class": per_class_table(report), "head-to-head": head_to_head_table(report),
              "literature": literature_table(report)}
    comments = [f"% cifarctl report; preamble: {PREAMBLE}",
                *(f"% {line}" for line in header_lines(report)),
                *(f"% note: {note}" for note in report.notes)]
    floats = [table(t, label) for label, t in tables.items() if t.rows]
    return "\n".join(c.replace("\n", " ") for c in comments) + "\n\n" + "\n\n".join(floats) + "\n"

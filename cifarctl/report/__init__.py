"""`cifarctl report`: runs from the MLflow store compared over seeds (issue 6).

    from cifarctl.report.build import build_report
    report = build_report("sqlite:///mlflow.db", experiments=["lt100"])

Modules, one concern each: `runs` (MLflow -> pandas), `groups` (seeds -> configurations,
labels), `stats` (mean, CI, t-tests; pure), `tables` (the three tables), `literature`
(published numbers with citations), `render` (rich, Markdown, HTML, CSV, JSON), `figures`
(pictures), `export` (files and the report run), `build` (the whole pipeline). Importing
this package, `tables`, `render` or `export` imports neither MLflow nor pandas nor torch.
"""

# Choices the CLI's help shows; here so that `cifarctl --help` imports nothing else (issue 2).
FORMATS = ("table", "markdown", "csv", "json", "html", "latex")
DEFAULT_BASELINE = "loss.name=ce,loss.beta=0"

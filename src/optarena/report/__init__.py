"""The report: verdicts and figures as one self-contained HTML file plus ``verdicts.json``.

``write_report(verdicts, out_dir)`` for the claims; ``write_html(path, title, sections)`` for any
other page (``optarena compare``) through the same template; ``render(plot)`` draws one figure.
"""

from optarena.report.figures import render, to_data_uri
from optarena.report.html import DEFAULT_TITLE, render_html, write_html, write_report

__all__ = ["DEFAULT_TITLE", "render", "render_html", "to_data_uri", "write_html", "write_report"]

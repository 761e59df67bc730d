"""What the user reads: the ``Report`` record built from a run, ``report.md``, plots, exports."""

from planner.report.build import build_report
from planner.report.folder import render_folder
from planner.report.markdown import render_report, summary_text

__all__ = ["build_report", "render_folder", "render_report", "summary_text"]

"""Vocab Trim Studio core: token coverage, draft cost, search, export and benchmark.

No Streamlit here; the dashboard (app.py, pages/) and the CLI (python -m vtcore) sit on top.
"""

__version__ = "0.1.0"

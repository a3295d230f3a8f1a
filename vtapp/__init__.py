"""The dashboard's Streamlit-side helpers (app.py and pages/ use them; vtcore never imports this)."""

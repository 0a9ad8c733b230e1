"""The web app under ``/app``: server-rendered pages for sales, marketing and data science, on the
same keys, roles and serving state as the API (``pages`` is the router)."""

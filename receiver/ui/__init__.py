"""The dashboard at ``/ui``: server-rendered pages (Jinja2 templates and one CSS file
shipped in this package), behind the API token via a signed session cookie."""

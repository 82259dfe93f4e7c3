"""What makes the dashboard quick, kept apart from what it shows: the launch head start (the first page's imports and
figures while the browser loads), the primer (the browser's lazily loaded chart code requested early) and the
background prewarm (every other page's caches filled after the first page has rendered)."""

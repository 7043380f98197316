"""The learning console: one page at ``/console`` (static HTML, script and SVG plots served from the package)
that reads the public /v1/learning routes and steers learning through them (docs/console.md)."""

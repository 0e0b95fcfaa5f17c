"""`edgefleet dashboard`'s web app: server-rendered pages over AdminService's read RPCs.

source.py     the one door to central (FleetSource: read RPCs only; a failed call is a Missing, shown in place)
views.py      what the pages show, computed from the replies: pure, unit-tested
pages.py      each page's calls and context
security.py   loopback by default, the Host check, the Content-Security-Policy: pure decisions
app.py        Starlette routes, Jinja2 templates (autoescaped), the security middleware
templates/    the pages and their live partials (htmx re-fetches them every few seconds)
static/       CSS, the chart script, and htmx and uPlot vendored from npm (static/vendor/VENDORED.md)
"""

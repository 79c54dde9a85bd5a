"""A browser, as the tests see one: Debian's headless Chromium (``make browser`` installs it; never a
downloaded build) and the headers a browser's request carries."""

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""How the tests launch it: headless, in a container, with nothing of its own going on the network."""

BROWSER = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"}
"""The user agent of a browser's request: ingest counts events only from what looks like one."""

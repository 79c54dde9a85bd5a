"""What the tests share, by what it is: fakes behind the services' interfaces (``fakes``), the services on
real servers and how to wait for them (``servers``), loads and truths to count (``load``, ``past_days``),
reading a topic back (``kafka``), a browser (``browser``), a /metrics page (``metrics``), and the
dashboards' cases (``dashboard_cases``). Fixtures live in the ``conftest.py`` files."""

"""Real-browser tests of the dashboard (Debian chromium via playwright)."""

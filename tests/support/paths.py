"""Where the checkout is, for tests that read its files (docs, deploy manifests, web/)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

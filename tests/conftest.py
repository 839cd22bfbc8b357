"""Shared fixtures: the real benchmark data beside the project and the converted bundled encoder.

Tests that need `../shared/data` skip when it is absent (users run the suite without it), unless
XLGAP_REQUIRE_TEST_DATA=1 (set by .ci/run), where a missing folder is an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("XLGAP_TEST_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The XTREME-layout benchmark folder used by integration tests."""
    path = _shared_data_dir()
    if not path.is_dir():
        if os.environ.get("XLGAP_REQUIRE_TEST_DATA") == "1":
            pytest.fail(f"XLGAP_REQUIRE_TEST_DATA=1 but the test data folder {path} does not exist")
        pytest.skip(f"benchmark data not found at {path} (set XLGAP_TEST_DATA)")
    return path


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled multilingual-e5-small converted to a Hugging Face model directory (cached)."""
    from xlgap.models.bundled import convert_bundled

    return convert_bundled("multilingual-e5-small")

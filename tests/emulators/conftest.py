"""The emulators' own tests use the same service fixtures as the backend tests."""

from tests.e2e.azurebatch.conftest import batch, emulator  # noqa: F401
from tests.e2e.tes.conftest import moto, s3, shared_dir  # noqa: F401

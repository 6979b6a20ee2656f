"""The platform name the tests' machines carry (importable from settings modules)."""

import os

# Machines the tests start are labelled with a platform name of their own, so a
# developer's running stack on the same engine is never touched by the tests' cleanup.
TEST_PLATFORM = f"cyberlab-test-{os.environ.get('TEST_DATABASE_NAME', 'default')}"

"""The `verl.plugins` entry point: `import verl` imports this module in every process.

Registrations only. verl swallows plugin import errors (it logs them at debug level), so a failure
here would silently leave `algorithm.adv_estimator=tapo` unknown; tests import verl in a fresh
process and check the registry.
"""

from recipe_tapo import advantage  # noqa: F401  (registers the `tapo` advantage estimator)
from recipe_tapo.workers import cpu_backend

cpu_backend.register()

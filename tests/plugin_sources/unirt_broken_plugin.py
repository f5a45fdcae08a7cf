"""A plugin whose import fails, as when its engine is missing or broken."""

import fancyengine_that_does_not_exist  # noqa: F401 - this plugin's mistake: its import fails

"""Lines a test wants in the CI log, pass or fail: ``record_property(CI_LOG, text)``.

The root conftest prints them in the run's summary. A ``print`` (even with capturing
off) would vanish inside a pytest-xdist worker; a report's properties reach the controller.
"""

CI_LOG = "ci_log"

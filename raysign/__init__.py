"""raysign: five results from "Bridging theory and practice in optimization", run for real.

The algorithms live here as plain torch / numpy / TensorLy code that never imports Ray;
the distributed system (Ray actors, the training driver, sweeps) lives in the sibling
package ``actors``.
"""

__version__ = "0.1.0"

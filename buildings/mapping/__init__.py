"""Mapping a region: many GeoTIFFs through an engine into per-file masks and one building layer.

``sources`` (what to read), ``engine`` (where windows are predicted: in process or on Ray Data),
``job`` (:func:`run_map`: plan, predict, commit per file, merge, summarise), ``merge`` (one layer
across files and CRSs).
"""

from buildings.mapping.engine import PredictorSpec
from buildings.mapping.job import MapOptions, MapResult, check_installed, run_map

__all__ = ["MapOptions", "MapResult", "PredictorSpec", "check_installed", "run_map"]

"""The engine runs any method: loop, optimizer, schedule, precision, distribution, checkpoints."""

from selfsup.engine.loop import CollapseDetected, TrainingDiverged, TrainResult, make_fabric, train

__all__ = ["CollapseDetected", "TrainResult", "TrainingDiverged", "make_fabric", "train"]

"""The engine runs any method: loop, optimizer, schedule, precision, distribution, checkpoints."""

from selfsup.engine.loop import TrainingDiverged, TrainResult, make_fabric, train

__all__ = ["TrainResult", "TrainingDiverged", "make_fabric", "train"]

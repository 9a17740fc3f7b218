"""Growth during training: *when* (triggers), *where* (scores), and the loop (trainer).

*How* to grow is a morphism (:mod:`morphsearch.morphisms`); this package decides when a
growth step is due, which candidate (morphism, site) is best, and keeps training the grown
network with its optimizer state, recording every growth event.
"""

from morphsearch.growth.events import EvalRecord, GrowthEvent, TrainResult
from morphsearch.growth.fisher import natural_expansion_eta
from morphsearch.growth.scores import (
    Candidate,
    GradMaxScore,
    NaturalExpansionScore,
    RoundRobin,
    Score,
    Scorer,
    SplittingScore,
    candidates,
    growth_kind,
)
from morphsearch.growth.trainer import GrowingTrainer, GrowthConfig, train
from morphsearch.growth.triggers import (
    LossPlateau,
    Schedule,
    ScoreThreshold,
    Trigger,
    find_plateaus,
    relative_improvement,
)

__all__ = [
    "Candidate",
    "EvalRecord",
    "GradMaxScore",
    "GrowingTrainer",
    "GrowthConfig",
    "GrowthEvent",
    "LossPlateau",
    "NaturalExpansionScore",
    "RoundRobin",
    "Schedule",
    "Score",
    "ScoreThreshold",
    "Scorer",
    "SplittingScore",
    "TrainResult",
    "Trigger",
    "candidates",
    "find_plateaus",
    "growth_kind",
    "natural_expansion_eta",
    "relative_improvement",
    "train",
]

"""How an autoencoder is trained: its objectives and options (cheap to import; no TensorFlow)."""

from __future__ import annotations

from dataclasses import dataclass, field

# The autoencoders' training objectives (simfusion.learn.autoencoder implements them).
OBJECTIVES = ("plain", "denoising", "augment", "contrastive")


# What the training engineer expects to rank best; the evaluation measures it (`--objective`).
DEFAULT_OBJECTIVE = "contrastive"


@dataclass(frozen=True)
class TrainOptions:
    """How one view's autoencoder is trained (the `train.py` flags of the same names)."""

    epochs: int = 20
    batch_size: int = 32
    latent: int = 16
    objective: str = DEFAULT_OBJECTIVE
    validation_split: float = 0.1
    patience: int = 5
    seed: int = 0
    learning_rate: float = 1e-3
    contrastive_weight: float = 0.1
    filters: tuple[int, int, int] = field(default=(32, 64, 128))
    time_budget: float | None = None  # seconds per view; training stops when spent (None: epochs only)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}")
        for name in ("epochs", "batch_size", "latent", "patience"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {getattr(self, name)}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, not {self.time_budget}")
        if not 0 <= self.validation_split < 1:
            raise ValueError(f"validation_split must be in [0, 1), not {self.validation_split}")

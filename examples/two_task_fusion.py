"""The example that started Lepton: one classification task, one regression task, and a fusion
output over a shared layer — each task reading its own target, each with its own loss.

A lender predicts, for each applicant, whether they will default (binary), the size of the
claim if they do (regression), and — the fused, final output — the expected loss, a regression
head that reads the two task outputs together with the shared representation.

Run: python examples/two_task_fusion.py   (about 20 seconds on 2 CPU cores)
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd

from lepton import Bundle, MultiTaskModel, Task, Trainer
from lepton.data import from_frame


def make_applicants(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    default = x[:, 0] + 0.8 * x[:, 1] - 0.5 * x[:, 2] + 0.3 * rng.normal(size=n) > 0.5
    claim = 10 + 3 * x[:, 1] + 2 * x[:, 3] + 0.5 * rng.normal(size=n)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    df.insert(0, "applicant_id", np.arange(n))
    df["region"] = np.array(["north", "south", "east", "west"])[rng.integers(0, 4, size=n)]
    df["default"] = np.where(default, "yes", "no")
    df["claim"] = claim
    df["expected_loss"] = np.where(default, claim, 0.0) + 0.2 * rng.normal(size=n)
    return df


def main(epochs: int = int(os.environ.get("LEPTON_EXAMPLE_EPOCHS", "40"))) -> dict:
    tasks = [
        Task("default", "binary"),  # classification: binary cross-entropy on column "default"
        Task("claim", "regression"),  # regression: mean squared error on column "claim"
        Task(
            "expected_loss",
            "regression",
            fusion=("default", "claim"),  # reads both task outputs ...
            fusion_representation=True,  # ... and the shared layer
        ),
    ]
    data = from_frame(
        make_applicants(),
        tasks,
        numeric=[f"f{i}" for i in range(6)],
        categorical=["region"],
        stratify="default",
    )
    model = MultiTaskModel.for_data(data, {"hidden": [64, 64], "head_hidden": [32]})
    trainer = Trainer(
        model,
        balancer="ew",
        optim={"name": "adam", "lr": 3e-3},
        train={"epochs": epochs, "batch_size": 128, "early_stopping": {"patience": 10}},
        preprocessor=data.preprocessor,
        progress=False,
    )
    trainer.fit(data.train, data.val)
    metrics = trainer.evaluate(data.test).metrics
    for task, values in metrics.items():
        print(task, {k: round(v, 4) for k, v in values.items() if v is not None})

    # The same model, saved and loaded again, predicts all three outputs from raw rows.
    with tempfile.TemporaryDirectory() as tmp:
        Bundle(model, data.preprocessor, name="lender").save(f"{tmp}/bundle")
        predictor = Bundle.load(f"{tmp}/bundle").predictor()
        print(predictor.predict(data.frames.test.head(3), keep=["applicant_id"]))
    return metrics


if __name__ == "__main__":
    main()

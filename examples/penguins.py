"""The quickstart in Python: three penguin tasks, one shared model, single-task baselines, Δm.

Run: python examples/penguins.py   (about 30 seconds on 2 CPU cores)
"""

from __future__ import annotations

from pathlib import Path

from lepton import load_config, run_experiment

HERE = Path(__file__).parent


def main(run_dir: str = "runs/penguins-python", epochs: int | None = None) -> None:
    overrides = ["logging.progress=false"] + ([f"train.epochs={epochs}"] if epochs else [])
    config = load_config(HERE / "penguins.yaml", overrides)
    result = run_experiment(config, run_dir, overwrite=True, baselines=True)
    for task, metrics in result.metrics.items():
        main_metric = result.main_metric[task]
        baseline = (result.baselines or {}).get(task, {}).get(main_metric)
        value = metrics[main_metric]
        print(f"{task:12s} {main_metric:9s} multi-task {value:.4f}   single-task {baseline:.4f}")
    print(f"Δm = {result.delta_m:+.2f}%   bundle: {result.bundle_dir}")


if __name__ == "__main__":
    main()

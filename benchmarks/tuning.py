"""Tuning strategies on a fixed budget (issue 15), in one run on this machine.

For each strategy (Random; Random with SageMaker's `Auto` early stopping; Hyperband; Bayesian)
and each seed, one `raysight tune` job of N trials of up to E epochs, P in parallel, on the
digits (ResNet-20 at 3x8x8), tuning learning_rate (log, 1e-4 to 0.5) and mini_batch_size
(8 to 64). Reported per run: the best validation accuracy, the epochs trained by all trials
(from each child's metrics.json) and the wall time; then each strategy's medians.

Usage: python benchmarks/tuning.py [--trials 12] [--epochs 8] [--parallel 2] [--seeds 1 2 3]
       [--limit 600]
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

STRATEGIES = {
    "Random": {"Strategy": "Random"},
    "Random+Auto": {"Strategy": "Random", "TrainingJobEarlyStoppingType": "Auto"},
    "Hyperband": {"Strategy": "Hyperband"},
    "Bayesian": {"Strategy": "Bayesian"},
}


def request(root, out, counts, name, strategy, seed, args):
    from raysight.sample_data import digits

    job = digits.training_request(root, out, name="unused", counts=counts, image_shape="3,8,8", resize="9",
                                  epochs=str(args.epochs), lr_scheduler_step="", mini_batch_size="16")
    static = {k: v for k, v in job["HyperParameters"].items() if k not in ("learning_rate", "mini_batch_size")}
    config = {
        "RandomSeed": seed,
        "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": args.trials, "MaxParallelTrainingJobs": args.parallel},
        "ParameterRanges": {
            "ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.5",
                                           "ScalingType": "Logarithmic"}],
            "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "8", "MaxValue": "64"}]},
        **STRATEGIES[strategy],
    }
    if strategy == "Hyperband":
        config["StrategyConfig"] = {"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": args.epochs}}
    return {"HyperParameterTuningJobName": name, "HyperParameterTuningJobConfig": config,
            "TrainingJobDefinition": {k: job[k] for k in ("AlgorithmSpecification", "RoleArn", "InputDataConfig",
                                                          "OutputDataConfig", "ResourceConfig", "StoppingCondition")}
            | {"StaticHyperParameters": static}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--limit", type=int, default=600,
                        help="digits kept per split: 600 keeps 600 train and all 359 validation images")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    args = parser.parse_args()

    from raysight import tune
    from raysight.sample_data import digits

    work = tempfile.mkdtemp(prefix="raysight-tuning-bench-")
    root = os.path.join(work, "digits")
    counts = digits.export(root, limit=args.limit)
    rows = []
    for seed in args.seeds:
        for strategy in args.strategies:
            name = f"{strategy.replace('+', '-').lower()}-{seed}"
            out = os.path.join(work, name)
            tic = time.time()
            record = tune.run(request(root, out, counts, name, strategy, seed, args), echo=lambda *_: None)
            wall = time.time() - tic
            listed = json.load(open(os.path.join(out, name, "training-jobs.json")))["TrainingJobSummaries"]
            epochs = sum(len(json.load(open(os.path.join(out, s["TrainingJobName"], "output", "metrics.json"))))
                         for s in listed if os.path.exists(os.path.join(out, s["TrainingJobName"], "output",
                                                                        "metrics.json")))
            best = record["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
            stopped = sum(s["TrainingJobStatus"] == "Stopped" for s in listed)
            rows.append({"strategy": strategy, "seed": seed, "best": best, "epochs": epochs, "stopped": stopped,
                         "wall_s": wall})
            print(f"{strategy:12s} seed {seed}: best {best:.4f}, {epochs} epochs, {stopped} stopped, {wall:.0f} s",
                  flush=True)
            # written after every run, so an interrupted benchmark keeps what it measured
            json.dump(rows, open(os.path.join(work, "results.json"), "w"), indent=1)
    print(f"\n{args.trials} trials of up to {args.epochs} epochs, {args.parallel} in parallel, seeds {args.seeds}")
    print("| Strategy | median best | median epochs | epochs vs Random | median wall (s) | stopped (all seeds) |")
    print("|---|---|---|---|---|---|")
    random_epochs = statistics.median(r["epochs"] for r in rows if r["strategy"] == "Random") \
        if any(r["strategy"] == "Random" for r in rows) else None
    for strategy in args.strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        epochs = statistics.median(r["epochs"] for r in mine)
        share = f"{epochs / random_epochs - 1:+.0%}" if random_epochs else "-"
        print(f"| {strategy} | {statistics.median(r['best'] for r in mine):.4f} | {epochs:.0f} | {share} | "
              f"{statistics.median(r['wall_s'] for r in mine):.0f} | {sum(r['stopped'] for r in mine)} |")
    print(f"rows: {os.path.join(work, 'results.json')}")


if __name__ == "__main__":
    main()

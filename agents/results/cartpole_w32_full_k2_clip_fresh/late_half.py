"""Mean evaluation return over the second half of training (steps > 100,000: 100 evaluations per run)
for the runs of this folder's `compare` command, with rliable's IQM, 95 % stratified-bootstrap CI and
P(MLE > FuncID). A post-hoc check, written after the last-10 comparison: it asks whether MLE's edge on
the last 10 evaluations holds over a longer window.

Usage: python late_half.py COMPARE_OUT   (the --out folder of the documented compare command;
       needs numpy and rliable)
"""
import csv
import glob
import sys

import numpy as np
from rliable import library as rly
from rliable import metrics


def late_means(out, prefix, after=100_000):
    means = []
    for job in sorted(glob.glob(f"{out}/runs/{prefix}_*")):
        (evals,) = glob.glob(f"{job}/*/evals.csv")
        rows = list(csv.DictReader(open(evals)))
        late = [float(r["charts/episodic_return"]) for r in rows if int(r["global_step"]) > after]
        means.append(np.mean(late))
    return np.array(means)


def main(out):
    np.random.seed(0)
    scores = {"MLE": late_means(out, "0_mle")[:, None], "FuncID": late_means(out, "1_funcid")[:, None]}
    for name, s in scores.items():
        print(f"{name}: per seed {np.round(s.ravel(), 1).tolist()}, mean {s.mean():.1f} ± {s.std():.1f}")
    point, ci = rly.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=50_000)
    for name in scores:
        print(f"{name}: IQM {point[name][0]:.1f} [{ci[name][0, 0]:.1f}, {ci[name][1, 0]:.1f}]")
    pair = {"MLE > FuncID": (scores["MLE"], scores["FuncID"])}
    point, ci = rly.get_interval_estimates(pair, metrics.probability_of_improvement, reps=2_000)
    print(f"P(MLE > FuncID) = {point['MLE > FuncID']:.2f} "
          f"[{ci['MLE > FuncID'][0, 0]:.2f}, {ci['MLE > FuncID'][1, 0]:.2f}]")


if __name__ == "__main__":
    main(sys.argv[1])

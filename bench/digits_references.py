"""External references for the digits target of issue 13, on the searches' own splits.

For each split seed (0, 1, 2: the ``seed`` of ``configs/digits.yaml``, which draws the
stratified validation and test splits):

* an RBF support-vector machine (scikit-learn's ``SVC`` on the 64 standardised pixels),
  ``C`` and ``gamma`` picked on the validation split from a 4 x 3 grid;
* a hand-written CNN far above the search's ``max_params`` (conv 32 - conv 64 with batch
  norm, 2x2 max pool, dense 128: 151,498 parameters), Adam at 3e-3 with a cosine
  schedule, 3,000 steps at batch 64 on the training split, two initialisations.

Test accuracy is read once per model; nothing is chosen on it.

Run: ``PYTHONPATH=. .venv/bin/python bench/digits_references.py [--seeds 0 1 2]`` (about 2
minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics

import torch
from sklearn.svm import SVC

from morphsearch import builders
from morphsearch.data import load_dataset
from morphsearch.growth.trainer import GrowthConfig, evaluate, train

SEEDS = (0, 1, 2)


def svm(seed: int) -> tuple[float, float]:
    """(validation, test) accuracy of the validation-picked RBF SVM."""
    data = load_dataset("digits", seed=seed, image=False)
    (xt, yt), (xv, yv), (xs, ys) = (data.split(s) for s in ("train", "val", "test"))
    best: tuple[float, SVC] | None = None
    for c in (1.0, 3.0, 10.0, 30.0):
        for gamma in (0.003, 0.01, 0.03):
            model = SVC(C=c, gamma=gamma).fit(xt.numpy(), yt.numpy())
            score = float(model.score(xv.numpy(), yv.numpy()))
            if best is None or score > best[0]:
                best = (score, model)
    assert best is not None
    return best[0], float(best[1].score(xs.numpy(), ys.numpy()))


def big_cnn(seed: int, init: int) -> tuple[float, float]:
    """(validation, test) accuracy of the 151k-parameter CNN."""
    data = load_dataset("digits", seed=seed)
    arch = builders.cnn(channels=[32, 64], hidden=[128], batchnorm=True, seed=init)
    trained = train(arch, data, GrowthConfig(steps=3000, lr=3e-3, lr_schedule="cosine",
                                             batch_size=64, seed=init, morphisms=())).arch
    cpu = torch.device("cpu")
    module = trained.to_module()
    return (evaluate(module, data, "val", device=cpu)[1],
            evaluate(module, data, "test", device=cpu)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="split seeds (the digits config's seed), default 0 1 2")
    seeds = parser.parse_args().seeds
    torch.set_num_threads(2)
    print("| split seed | RBF SVM val | RBF SVM test | CNN 151k val (2 inits) | "
          "CNN 151k test (2 inits) |")
    print("|---:|---:|---:|---:|---:|")
    svm_tests, cnn_tests = [], []
    for seed in seeds:
        sv, st = svm(seed)
        runs = [big_cnn(seed, init) for init in (0, 1)]
        svm_tests.append(st)
        cnn_tests += [t for _, t in runs]
        vals = " / ".join(f"{100 * v:.1f}" for v, _ in runs)
        tests = " / ".join(f"{100 * t:.1f}" for _, t in runs)
        print(f"| {seed} | {100 * sv:.1f} | {100 * st:.1f} | {vals} | {tests} |", flush=True)
    print(f"| mean | | **{100 * statistics.mean(svm_tests):.1f}** | | "
          f"**{100 * statistics.mean(cnn_tests):.1f}** |")


if __name__ == "__main__":
    main()

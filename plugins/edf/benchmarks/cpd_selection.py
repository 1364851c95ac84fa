"""Time CPD's keep-mask for P parameters (default 615,690: ConvNetD5 at 128 px) against a full sort.

    python plugins/edf/benchmarks/cpd_selection.py [--params 615690] [--alpha 0.25] [--threads 1]

Prints the median and minimum of ``--repeats`` timings of: ddtoolbox_edf.cpd.keep_mask (numpy.partition + tie
handling), torch.topk of the k smallest, torch.kthvalue, and torch.sort (what the reference does).
"""

import argparse
import statistics
import time

import torch

from ddtoolbox_edf.cpd import keep_mask, num_dropped


def timeit(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, min(times) * 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--params", type=int, default=615_690)
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    # squared differences of parameters: positive, heavy-tailed, some exact ties (zeros)
    l = (torch.randn(a.params, generator=g) * 1e-3) ** 2
    l[::1000] = 0.0
    l = l.to(a.device)
    k = num_dropped(a.alpha, a.params)
    sync = torch.cuda.synchronize if l.is_cuda else (lambda: None)
    rows = {
        "keep_mask (selection + ties)": lambda: (keep_mask(l, a.alpha), sync()),
        "torch.kthvalue alone": lambda: (torch.kthvalue(l, k), sync()),
        "topk(k, largest=False)": lambda: (torch.topk(l, k, largest=False), sync()),
        "sort (reference)": lambda: (torch.sort(l), sync()),
    }
    print(f"P = {a.params:,}, alpha = {a.alpha}, k = {k:,}, device {a.device}, threads {torch.get_num_threads()}")
    for name, fn in rows.items():
        median, best = timeit(fn, a.repeats)
        print(f"  {name:<30} median {median:8.2f} ms, min {best:8.2f} ms (of {a.repeats})")


if __name__ == "__main__":
    main()

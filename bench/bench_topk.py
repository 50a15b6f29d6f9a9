"""dense_topk / hard_negatives vs PyTorch eager; see xcops/benchmarks/topk.py (= `xcops bench topk`)."""

from xcops.benchmarks.topk import main

if __name__ == "__main__":
    main()

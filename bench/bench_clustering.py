"""balanced_kmeans vs PECOS and a node-by-node loop; see xcops/benchmarks/clustering.py (= `xcops bench clustering`)."""

from xcops.benchmarks.clustering import main

if __name__ == "__main__":
    main()

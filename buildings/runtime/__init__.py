"""Where and how the computation runs: the device (``device``) and the Keras-on-torch speed-ups
(``torch_speedups``, installed explicitly by training, inference and the benchmarks)."""

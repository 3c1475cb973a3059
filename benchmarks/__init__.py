"""autoinit's benchmarks: run ``python -m benchmarks.run [--quick] [--only a,b]``.

One module per benchmark, each with ``run(quick, workdir) -> {"figures": ..., "targets": ...}``;
the shared timing, memory, data and training helpers live in :mod:`benchmarks.common`.
Every figure is a ratio against a baseline measured in the same run. See README.md.
"""

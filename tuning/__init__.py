"""Grid search over gin parameters, one sub-run per trial, compared in TensorBoard.

    grid.py     the grid: validation, expansion into trials, names, gin text of values
    runner.py   one trial as subprocesses of train.py and evaluate.py (validation only)
    hparams.py  TensorBoard HParams: experiment config and one session per trial
    results.py  results.csv and the printed summary with the best trial's bindings
    search.py   `tune.grid_search`, the gin-configurable search that ties them together
"""

"""Experiments as data: studies (docs/studies/*.toml) run as bit-width sweeps whose cells are cached under
versioned keys, and the reports, figures and README tables generated from their committed results.

    grid.py       bit-width lists and the cells of a sweep
    cache.py      model and cell cache keys (explicit, versioned schema)
    sweep.py      run_sweep: train the float models, evaluate or read each cell, write the results file
    records.py    the result record and read_results
    study.py      parse and validate a study file; run it
    aggregate.py  records grouped and averaged (the report's rules)
    figures.py    the report's PNG figures
    report.py     render_report: Table 1, Fig. 4 and Fig. 5 analogues as Markdown + figures
    readme.py     the README's results and bench tables, generated from committed results
"""

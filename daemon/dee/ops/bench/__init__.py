"""`dee bench`: the fixed outreach-v2 workload through the real daemon path, with its checks.

`workload` defines what runs and what a correct engine produces, `daemons` starts the `dee run`
processes, `run` drives it, `measure` reads back, replays and measures the raw write limit,
`idle` measures memory and empty ticks with many waiting runs, `report` prints the figures.
"""

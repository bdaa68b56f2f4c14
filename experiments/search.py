"""MicroNAS search: one or many seeds, a grid of weights / budgets / datasets, resumable.

    python experiments/search.py                          # = micronas-search: one search on the defaults
    python experiments/search.py --seeds=0-9 --w_latency=0,0.5,1,2 --results=runs.jsonl --json_out=runs.json

Flags: ``python experiments/search.py --helpfull`` (defined in ``micronas_jax/search_cli.py``).
"""

from absl import app

from micronas_jax import search_cli

if __name__ == "__main__":
    app.run(search_cli.main)

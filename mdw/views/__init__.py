"""What each tab of the workbench shows, as functions of a run folder that return plain dataclasses
(numpy arrays, numbers, strings). `app/` only lays them out; the CLI and tests call the same.

  runs.py         the new-run form's choices, short run labels, loss curves (L_TM de-duplicated once)
  noisy.py        the first flagged pair, a pair's detail and word maps, the one CSV export
  embedding.py    the embedding map: named points, its palette and draw order, a point's sample
  evolution.py    snapshots: per-image change, P̃ and α over iterations, the amplified change map
  retrieval.py    query answers (one result shape), the run's example query, the recall table
"""
